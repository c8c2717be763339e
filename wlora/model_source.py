"""Where a run's model comes from: a local folder, or a hub id resolved to its local snapshot.

No torch here, so the command line rejects a missing model folder before loading anything.
"""

from __future__ import annotations

from pathlib import Path

from wlora.data.layout import LOCAL_COPIES_HINT, one_line


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def check_model_source(name_or_path: str) -> None:
    """Raise ``FileNotFoundError`` at once when ``name_or_path`` is a path but not a model folder."""
    path = Path(name_or_path).expanduser()
    if _looks_like_path(name_or_path) and not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {name_or_path}. {LOCAL_COPIES_HINT}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: not a Hugging Face model folder")


def resolve_model(name_or_path: str) -> str:
    """A local folder as is; a hub id → its local snapshot (downloaded once, then from the HF cache).

    Raises:
        FileNotFoundError: a missing folder, or a hub id that could not be fetched (the one-line
            message says how to point the run at local copies).
    """
    check_model_source(name_or_path)
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser().resolve())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_path,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "spiece*", "*.bin"],
        )
    except Exception as e:  # network, auth, missing repo: one clear message
        raise FileNotFoundError(
            f"model {name_or_path!r} is not a local folder and could not be fetched from the hub "
            f"({one_line(e)}). {LOCAL_COPIES_HINT}"
        ) from None
