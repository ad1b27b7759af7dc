"""mbuild: a declarative build system for on-device neural networks."""
__version__ = "0.1.0"

from mbuild.errors import BuildError, BundleError, ManifestError, MbuildError  # noqa: E402
from mbuild.manifest import load_manifest  # noqa: E402

__all__ = ["__version__", "load_manifest", "MbuildError", "ManifestError", "BuildError", "BundleError"]
