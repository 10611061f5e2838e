"""Where a starter member's pretrained weights come from (`resolve_weights`): a weight file the
user put in the work folder, the Hugging Face hub's local cache, the hub itself when it answers,
or none (random initialisation, said in one line). Nothing is downloaded while deciding."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # a weight file the user drops in: what timm loads


@dataclass(frozen=True)
class Weights:
    """Where a member's backbone starts: timm's hub (`hub`), a local file (`file`), or nothing."""

    source: str  # hub | file | none
    why: str  # the recipe comment
    file: Path | None = None

    @property
    def pretrained(self) -> bool:
        return self.source != "none"


def weight_file(folder: Path, backbone: str) -> Path | None:
    """A weight file for `backbone` in `folder`: `<arch>[.<tag>]<suffix>` (suffix .safetensors, .pth,
    .pt or .bin), or a Hugging Face download `<arch>[.<tag>]/model.safetensors` (or pytorch_model.bin)."""
    arch = backbone.split(".")[0]
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir()):
        stem = entry.name
        for suffix in WEIGHT_SUFFIXES:
            stem = stem.removesuffix(suffix)
        if stem != arch and not stem.startswith(arch + "."):
            continue
        if entry.is_file() and entry.name != stem:
            return entry
        for inner in ("model.safetensors", "pytorch_model.bin"):
            if entry.is_dir() and (entry / inner).is_file():
                return entry / inner
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_location(backbone: str) -> tuple[str | None, str | None]:
    """(Hugging Face repo, or None; the plain download URL, or None) of timm's default weights."""
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone)  # the tag's, or the architecture's default tag's
    return (cfg.hf_hub_id or None, cfg.url or None) if cfg is not None else (None, None)


def hub_cached(backbone: str) -> bool:
    """Whether timm would find the backbone's hub weights in the local caches (no network)."""
    import torch

    repo, url = _hub_location(backbone)
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo.split("@")[0], name), str):
                return True
    if url:  # timm's url weights: torch's hub cache
        return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file()
    return False


def hub_reachable(backbone: str, timeout: float = 5.0) -> bool:
    """Whether the backbone's hub weights can be downloaded from here (never when HF_HUB_OFFLINE is set)."""
    if _offline():
        return False
    repo, url = _hub_location(backbone)
    target = f"https://huggingface.co/{repo.split('@')[0]}/resolve/main/config.json" if repo else url
    if not target:
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(target, method="HEAD"), timeout=timeout).close()
        return True
    except Exception:  # noqa: BLE001 (any refusal, name or timeout error means: not from here)
        return False


def hub_unusable(backbone: str) -> str | None:
    """Why this timm cannot fetch the backbone's Hugging Face weights at all, or None (timm 1.0.13 with
    huggingface_hub 1.0 or newer finds no hub: the errors it imports moved)."""
    import timm
    from timm.models import _hub

    repo, _ = _hub_location(backbone)
    if repo and not _hub.has_hf_hub():
        try:
            hub = f"huggingface_hub {importlib.metadata.version('huggingface_hub')}"
        except importlib.metadata.PackageNotFoundError:
            hub = "no huggingface_hub"
        return f"timm {timm.__version__} cannot use {hub} (pip install -U timm, or 'huggingface_hub<1')"
    return None


def resolve_weights(backbone: str, choice: str, echo=print) -> Weights:
    """Where `backbone` starts under `--pretrained choice` (auto | hub | none | a file or folder)."""
    if choice == "none":
        return Weights("none", "from scratch (--pretrained none)")
    unusable = hub_unusable(backbone) if choice in ("auto", "hub") else None
    if unusable and choice == "hub":
        raise KitError(f"--pretrained hub: {backbone}'s weights are on the Hugging Face hub, but {unusable}")
    if unusable:
        return Weights("none", f"from scratch: {unusable}")
    if choice == "hub":
        if not hub_cached(backbone) and not hub_reachable(backbone):
            echo(f"  warning: {backbone}: its hub weights are not cached here and the hub is out of reach; "
                 "training will fail until they are (or use --pretrained auto)")
        return Weights("hub", "timm's hub weights (--pretrained hub)")
    if choice == "auto":
        if hub_cached(backbone):
            return Weights("hub", "timm's hub weights, found in the local cache")
        if hub_reachable(backbone):
            import timm

            timm.create_model(backbone, pretrained=True, num_classes=0)  # into the cache now: training needs no network
            return Weights("hub", "timm's hub weights, downloaded into the local cache by --init")
        return Weights("none", "from scratch: no hub weights in the local cache and the hub is out of reach "
                               "(--pretrained PATH takes a weight file)")
    path = Path(choice).expanduser()
    if not path.exists():
        raise KitError(f"--pretrained {choice}: no such file or folder (or say auto, hub or none)")
    found = path if path.is_file() else weight_file(path, backbone)
    if found is None:
        return Weights("none", f"from scratch: no weight file for {backbone.split('.')[0]} in {path}")
    return Weights("file", f"the weight file {found.resolve()}", found.resolve())
