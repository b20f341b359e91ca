# PyInstaller runtime hook of mnist-desktop (packaging/mnist_desktop.spec), run before the
# program's own code.
#
# The build leaves out PySide6.QtOpenGL: 8.9 MB of bindings for Qt's OpenGL function
# tables, which nothing in the app calls (the training curves draw with pyqtgraph's raster
# painter; useOpenGL stays off). pyqtgraph binds the module by name when it is imported
# (pyqtgraph/Qt/OpenGLHelpers.py: `QtOpenGL = importlib.import_module("PySide6.QtOpenGL")`)
# and only touches it to draw with OpenGL. This hook makes that import give an empty
# module whose every attribute names what is missing, instead of ModuleNotFoundError. It
# is consulted last: a build that ships the real module imports the real module.
import importlib.abc
import importlib.machinery
import sys
import types

_LEFT_OUT = "PySide6.QtOpenGL"


class _LeftOutModule(types.ModuleType):
    def __getattr__(self, attr):
        # AttributeError, so hasattr() is False and `from ... import X` is an ImportError.
        raise AttributeError(f"{self.__name__}.{attr}: OpenGL drawing is not part of this build of "
                             "mnist-desktop (left out by packaging/mnist_desktop.spec)")


class _LeftOutFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == _LEFT_OUT else None

    def create_module(self, spec):
        return _LeftOutModule(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.append(_LeftOutFinder())
