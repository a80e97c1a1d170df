"""Starts the dev ComfyUI with this pack on 127.0.0.1 and keeps it running until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from comfy_harness import DEV_HOME, ComfyServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base", default=str(DEV_HOME / "base"),
                        help="ComfyUI base folder (models/, input/, output/, user/)")
    args = parser.parse_args()
    server = ComfyServer(base=Path(args.base), port=args.port, echo_log=True)
    server.start()
    print(f"ComfyUI with ComfyUI-ReCapture: {server.url}  (models, input, output under {args.base}). "
          "Ctrl-C stops it.", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"ComfyUI exited with {server.process.returncode}")
    except KeyboardInterrupt:
        print("stopping ComfyUI...", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
