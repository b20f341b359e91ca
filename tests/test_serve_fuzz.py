"""The API's OpenAPI description, fuzzed by schemathesis: whatever a client sends that
the description allows (and much that it does not), the server answers with a documented
status and body, never a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from mnist_desktop.service.api import ApiLimits, create_app  # noqa: E402
from mnist_desktop.service.models import ModelChoice, load_predictor  # noqa: E402



@schemathesis.serializer("application/x-gray8")
def _raw_pixels(ctx, value):
    """Raw pixels are bytes; what hypothesis generates for a binary body is sent as it is."""
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


app = create_app(load_predictor(ModelChoice(None, "cpu")), ApiLimits(max_body_bytes=1_000_000))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_description(case):
    # A body can be schema-valid (any bytes are "binary") and still not be an image, or an
    # image with no ink: those are documented 400s, so "schema-valid data must get a 2xx"
    # does not apply to this API. Every other check does (no 5xx, documented statuses,
    # content types and bodies, 405 with Allow, ...).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
