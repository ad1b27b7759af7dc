"""Where a build puts things; tasks and actions agree on paths through this one place."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path


@dataclass(frozen=True)
class BuildLayout:
    """build/<name>/source, build/<name>/<target>/{variant/, report.json}, dist/<name>-<version>.mbundle."""

    root: Path
    name: str
    version: str

    @cached_property
    def build_dir(self) -> Path:
        return self.root / "build" / self.name

    @cached_property
    def source_dir(self) -> Path:
        return self.build_dir / "source"

    @cached_property
    def source_json(self) -> Path:
        return self.source_dir / "source.json"

    def convert_dir(self, path: str) -> Path:
        """A shared base conversion (``convert:<name>/<path>``), e.g. build/<name>/convert/coreml-iOS16-fp16."""
        return self.build_dir / "convert" / path

    def convert_json(self, path: str) -> Path:
        return self.convert_dir(path) / "convert.json"

    def target_dir(self, target: str) -> Path:
        return self.build_dir / "targets" / target

    def variant_dir(self, target: str) -> Path:
        return self.target_dir(target) / "variant"

    def variant_json(self, target: str) -> Path:
        return self.variant_dir(target) / "variant.json"

    def report_json(self, target: str) -> Path:
        return self.target_dir(target) / "report.json"

    @cached_property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    @cached_property
    def bundle_path(self) -> Path:
        return self.dist_dir / f"{self.name}-{self.version}.mbundle"

    @cached_property
    def state_dir(self) -> Path:
        return self.root / ".mbuild"


def layout_for(manifest) -> BuildLayout:
    """One layout per (root, name, version): a no-op asks for ~800 paths, each a join of Path parts."""
    return _layout(manifest.root, manifest.name, manifest.version)


@cache
def _layout(root: Path, name: str, version: str) -> BuildLayout:
    return BuildLayout(root, name, version)
