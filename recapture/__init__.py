"""ReCapture: re-render a video along a new camera path (library; no ComfyUI imports)."""
