"""The training form: a view of one :class:`~training.config.TrainConfig`.

The form holds a recipe's config and shows the fields a user tunes; every edit builds a
new config through ``TrainConfig.replace`` (the config's own validation), so a value the
training would refuse is refused here, with the same one-line reason, before a run starts.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QSlider, QSpinBox, QWidget)
from PySide6.QtCore import Qt

from mnist_desktop.service import training_runs as tr
from training.config import OPTIMIZERS, SCHEDULERS, AugmentConfig, ConfigError, TrainConfig
from training.recipes import recipe_config

# The augmentation a recipe without its own gets when the user switches augmentation on
# (moderate affine jitter, as the reference CNN recipes use).
DEFAULT_AUGMENT = AugmentConfig(rotation=10.0, translate=0.1, scale=0.1)
_AMPLITUDES = ("rotation", "translate", "scale", "shear", "elastic_alpha", "thickness", "european")
DEVICES = (("auto", "Auto"), ("cpu", "CPU"), ("cuda", "CUDA (GPU)"))


class TrainConfigForm(QWidget):
    """Recipe, dataset and the tunable fields of a run.

    Signals
    -------
    changed(object)
        A valid :class:`TrainConfig` after an edit, or None while a field is invalid
        (:attr:`error` then says why).
    """

    changed = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainingForm")
        self.error = ""
        self._config: TrainConfig | None = None
        self._recipe_augment = AugmentConfig()
        self._loading = False

        self.recipe = QComboBox()
        self.recipe.setAccessibleName("Recipe")
        for name in tr.recipe_names():
            self.recipe.addItem(name, name)
            self.recipe.setItemData(self.recipe.count() - 1, tr.recipe_summary(name), Qt.ItemDataRole.ToolTipRole)
        self.dataset = QComboBox()
        self.dataset.setAccessibleName("Dataset")
        for c in tr.DATASET_CHOICES:
            self.dataset.addItem(c.label, c.key)
            if c.hint:
                self.dataset.setItemData(self.dataset.count() - 1, c.hint, Qt.ItemDataRole.ToolTipRole)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with one sub-folder per label")
        self.folder.setAccessibleName("Image folder")
        self.browse = QPushButton("Browse…")
        self.browse.setAccessibleName("Browse for image folder")
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 10_000)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(0, 65_536)
        self.lr = QLineEdit()
        self.lr.setAccessibleName("Learning rate")
        self.optimizer = QComboBox()
        self.optimizer.addItems(OPTIMIZERS)
        self.scheduler = QComboBox()
        self.scheduler.addItems(SCHEDULERS)
        self.augment_on = QCheckBox("on")
        self.augment_on.setAccessibleName("Augmentation")
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(0, 300)
        self.strength.setSingleStep(10)
        self.strength.setAccessibleName("Augmentation strength")
        self.strength_label = QLabel()
        self.device = QComboBox()
        for key, text in DEVICES:
            self.device.addItem(text, key)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2_000_000_000)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.95)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setDecimals(2)
        self.error_label = QLabel()
        self.error_label.setObjectName("formError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        self.error_label.setAccessibleName("Training settings problem")
        for w, name in ((self.epochs, "Epochs"), (self.batch_size, "Batch size"), (self.optimizer, "Optimizer"),
                        (self.scheduler, "Schedule"), (self.device, "Training device"), (self.seed, "Seed"),
                        (self.val_fraction, "Validation fraction")):
            w.setAccessibleName(name)

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Recipe", self.recipe)
        form.addRow("Dataset", self.dataset)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(self.browse)
        self._folder_row = QWidget()
        self._folder_row.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Folder", self._folder_row)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.lr)
        form.addRow("Optimizer", self.optimizer)
        form.addRow("Schedule", self.scheduler)
        aug = QHBoxLayout()
        aug.setContentsMargins(0, 0, 0, 0)
        aug.addWidget(self.augment_on)
        aug.addWidget(self.strength, 1)
        aug.addWidget(self.strength_label)
        aug_row = QWidget()
        aug_row.setLayout(aug)
        form.addRow("Augmentation", aug_row)
        form.addRow("Device", self.device)
        form.addRow("Seed", self.seed)
        form.addRow("Validation", self.val_fraction)
        form.addRow(self.error_label)
        self._form = form

        self.recipe.currentIndexChanged.connect(self._recipe_changed)
        self.dataset.currentIndexChanged.connect(self._dataset_changed)
        self.browse.clicked.connect(self._browse)
        for sig in (self.folder.editingFinished, self.lr.textChanged, self.epochs.valueChanged,
                    self.batch_size.valueChanged, self.optimizer.currentIndexChanged,
                    self.scheduler.currentIndexChanged, self.augment_on.toggled, self.strength.valueChanged,
                    self.device.currentIndexChanged, self.seed.valueChanged, self.val_fraction.valueChanged):
            sig.connect(self._edited)
        self._recipe_changed()
        self._dataset_changed()

    # ------------------------------------------------------------------ public
    def config(self) -> TrainConfig:
        """The form's config. Raises :class:`ConfigError` (one line) for an invalid field."""
        if self._config is None:
            raise ConfigError(self.error or "invalid training settings")
        return self._config

    def set_recipe(self, name: str) -> None:
        self.recipe.setCurrentIndex(max(0, self.recipe.findData(name)))

    def set_dataset(self, key: str, folder: str = "") -> None:
        self.folder.setText(folder)
        self.dataset.setCurrentIndex(max(0, self.dataset.findData(key)))
        self._edited()

    # ------------------------------------------------------------------ internals
    def _recipe_changed(self, *_) -> None:
        cfg = recipe_config(self.recipe.currentData())
        self._recipe_augment = cfg.augment
        self._loading = True
        try:
            self.epochs.setValue(cfg.epochs)
            self.batch_size.setValue(cfg.batch_size)
            self.lr.setText(f"{cfg.learning_rate:g}")
            self.optimizer.setCurrentText(cfg.optimizer)
            self.scheduler.setCurrentText(cfg.scheduler)
            self.augment_on.setChecked(cfg.augment.enabled)
            self.strength.setValue(100)
            self.seed.setValue(cfg.seed)
            self.val_fraction.setValue(cfg.val_fraction)
        finally:
            self._loading = False
        self._edited()

    def _dataset_changed(self, *_) -> None:
        choice = tr.dataset_choice(self.dataset.currentData())
        self._folder_row.setVisible(choice.needs_folder)
        self._form.labelForField(self._folder_row).setVisible(choice.needs_folder)
        self._edited()

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder (one sub-folder per label)", self.folder.text())
        if path:
            self.folder.setText(path)
            self._edited()

    def _augment(self) -> AugmentConfig:
        if not self.augment_on.isChecked():
            return AugmentConfig()
        base = self._recipe_augment if self._recipe_augment.enabled else DEFAULT_AUGMENT
        k = self.strength.value() / 100.0
        fields = {name: getattr(base, name) * k for name in _AMPLITUDES}
        return AugmentConfig(**{**base.__dict__, **fields})

    def _edited(self, *_) -> None:
        if self._loading:
            return
        self.strength.setEnabled(self.augment_on.isChecked())
        self.strength_label.setText(f"{self.strength.value()}%")
        try:
            cfg = self._build()
        except ConfigError as e:
            self._config, self.error = None, str(e)
        else:
            self._config, self.error = cfg, ""
        self.error_label.setText(self.error)
        self.error_label.setVisible(bool(self.error))
        self.changed.emit(self._config)

    def _build(self) -> TrainConfig:
        recipe = self.recipe.currentData()
        base = recipe_config(recipe)
        try:
            lr = float(self.lr.text().strip())
        except ValueError:
            raise ConfigError(f"learning rate {self.lr.text().strip()!r} is not a number (e.g. 0.001 or 1e-3)") \
                from None
        if not math.isfinite(lr):
            raise ConfigError("learning rate must be a finite number")
        changes = dict(tr.dataset_fields(self.dataset.currentData(), self.folder.text().strip()),
                       epochs=self.epochs.value(), batch_size=self.batch_size.value(), learning_rate=lr,
                       optimizer=self.optimizer.currentText(), scheduler=self.scheduler.currentText(),
                       device=self.device.currentData(), seed=max(0, self.seed.value()),
                       val_fraction=round(self.val_fraction.value(), 4), output=str(tr.runs_dir()))
        if self.seed.value() < 0:
            raise ConfigError("seed must be an integer >= 0")
        if changes["scheduler"] != base.scheduler:
            changes["scheduler_args"] = {}
        cfg = base.replace(**changes)
        aug = self._augment()
        d = cfg.to_dict()
        d["augment"] = aug.__dict__
        return TrainConfig.from_dict(d)
