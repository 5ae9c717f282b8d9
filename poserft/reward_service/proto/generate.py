"""Regenerate reward_pb2.py and reward_pb2_grpc.py from reward.proto with grpc_tools.protoc.

    python -m poserft.reward_service.proto.generate [OUT_DIR]

The proto is compiled under its package path (`poserft/reward_service/proto/reward.proto`), so its
descriptor name cannot clash with another `reward.proto` in the same process. protoc then writes
an absolute import into the gRPC module; it is rewritten to a package-relative one so the files can
live in any folder. The output depends only on the proto and the grpcio-tools version, which is
pinned, and a test checks the committed files match a fresh generation byte for byte.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PROTO_DIR.parents[2]  # the folder holding the `poserft` package
PROTO_NAME = "poserft/reward_service/proto/reward.proto"
GENERATED = ("reward_pb2.py", "reward_pb2_grpc.py")
_ABSOLUTE_IMPORT = "from poserft.reward_service.proto import reward_pb2 as"
_RELATIVE_IMPORT = "from . import reward_pb2 as"


def generate(out_dir: str | Path = PROTO_DIR) -> list[Path]:
    """Compile reward.proto into out_dir; returns the written files."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_ROOT / PROTO_NAME),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {PROTO_NAME}; see its message above")
        written = []
        for name in GENERATED:
            text = (Path(tmp) / Path(PROTO_NAME).parent / name).read_text()
            if name.endswith("_grpc.py"):
                if _ABSOLUTE_IMPORT not in text:
                    raise RuntimeError(f"protoc output changed: {name} no longer has {_ABSOLUTE_IMPORT!r} to rewrite")
                text = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(sys.argv[1] if len(sys.argv) > 1 else PROTO_DIR):
        print(f"wrote {path}")
