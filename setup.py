"""Packages and package data; the metadata is in pyproject.toml.

The top-level ``resources/`` folder (bundled model, ONNX copies, the 5k training subset,
sample images) is the source of truth. It ships as the package data of
``mnist_desktop.resources`` (mapped onto that folder), so a wheel or ``pip install .``
carries it inside ``site-packages/mnist_desktop/resources``; an editable install and a
checkout read the folder itself, and the frozen program has it beside its executable
(``mnist_desktop.core.paths.resources_dir`` finds all of them).
"""

from setuptools import find_namespace_packages, find_packages, setup

# Every folder under resources/ is a (data-only) sub-package of mnist_desktop.resources,
# named so that setuptools ships its files and knows why.
RESOURCES = ["mnist_desktop.resources"] + [f"mnist_desktop.resources.{p}" for p in
                                           find_namespace_packages(where="resources")]

setup(
    packages=find_packages(include=["mnist_desktop*", "training*"]) + RESOURCES,
    package_dir={"mnist_desktop.resources": "resources"},
    package_data={name: ["*"] for name in RESOURCES},
)
