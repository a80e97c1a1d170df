"""Stage 1 nodes: depth -> point cloud, a camera path, and the anchor video with its validity mask."""

from __future__ import annotations

import json
import os

import comfy.model_management

from ..recapture import camera
from ..recapture.config import CameraConfig, PointCloudConfig, RenderConfig, setting_of
from ..recapture.types import CameraPath, PointCloud
from ._api import (CATEGORY_ANCHOR, CATEGORY_DEPTH, Progress, check_cancel, check_inputs, input_files, input_path, io,
                   output_file, require_finite, search_aliases, setting_input, video_player, writable_folder)
from .depth import DepthType

PointCloudType = io.Custom("RECAPTURE_POINTCLOUD")
CameraPathType = io.Custom("RECAPTURE_CAMERA_PATH")

NO_FILE = "(none: use the preset)"
PATH_FILE_EXTENSIONS = (".json", ".txt")


@search_aliases("point cloud", "unproject", "depth to 3d", "3d points")
class ReCaptureDepthToPointCloud(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureDepthToPointCloud",
            display_name="ReCapture Depth To Point Cloud",
            category=CATEGORY_DEPTH,
            description=(
                "Turns each frame and its depth into a point cloud in that frame's camera. Depth may come "
                "from ReCapture Estimate Depth or from any depth node (IMAGE or MASK). Relative depth is "
                "normalised over the whole clip, so the scene does not breathe. Also writes a point cloud "
                "of the first frame under output/ for Preview 3D."
            ),
            inputs=[
                io.Image.Input("frames", tooltip="The source frames (colours of the points)."),
                io.MultiType.Input("depth", types=[io.Image, io.Mask, DepthType],
                                   tooltip="Depth per frame: ReCapture depth, or an IMAGE/MASK from another "
                                           "depth node. A different resolution with the same aspect ratio is "
                                           "resized to the frames."),
                setting_input(PointCloudConfig, "depth_kind", tooltip="For IMAGE/MASK depth (ReCapture depth brings its "
                              "own kind): " + setting_of(PointCloudConfig, "depth_kind").help),
                setting_input(PointCloudConfig, "near"),
                setting_input(PointCloudConfig, "far"),
                setting_input(PointCloudConfig, "fov_deg"),
                setting_input(PointCloudConfig, "edge_threshold"),
                io.Int.Input("preview_points", default=100_000, min=1_000, max=2_000_000, step=1_000,
                             tooltip="Points written to the first frame's preview file."),
                setting_input(PointCloudConfig, "align_depth", optional=True),
            ],
            outputs=[
                PointCloudType.Output("point_cloud", display_name="point_cloud", tooltip="Per-frame points, colours and intrinsics."),
                io.String.Output("preview_file", display_name="preview_file", tooltip="The first frame's point cloud (.glb) relative to output/, "
                                                         "for the core Preview 3D node; a .ply is written beside it."),
            ],
        )

    @classmethod
    def validate_inputs(cls, depth_kind: str, near: float, far: float, fov_deg: float,
                        edge_threshold: float) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def execute(cls, frames, depth, depth_kind: str, near: float, far: float, fov_deg: float,
                edge_threshold: float, preview_points: int,
                align_depth: bool = PointCloudConfig.align_depth) -> io.NodeOutput:
        from ..recapture.depth import depth_from_image, match_depth_size
        from ..recapture.pointcloud import make_point_cloud
        from ..recapture.pointcloud_files import point_cloud_preview_points, write_glb_points, write_ply
        from ..recapture.types import DepthMaps

        require_finite("frames", frames, "connect frames with pixel values in 0..1, e.g. from ReCapture Load Video")
        if isinstance(depth, DepthMaps):
            values, depth_kind = depth.values, depth.kind
        else:
            values = depth_from_image(depth)
        values = match_depth_size(values, frames.shape[1], frames.shape[2])
        cloud = make_point_cloud(frames.float(), values, kind=depth_kind, fov_deg=fov_deg, near=near, far=far,
                                 edge_threshold=edge_threshold, align_depth=align_depth)
        points, colors = point_cloud_preview_points(cloud, frame=0, max_points=preview_points)
        glb_path, glb_rel = output_file("recapture/pointcloud", "glb")
        write_glb_points(glb_path, points, colors)
        write_ply(os.path.splitext(glb_path)[0] + ".ply", points, colors)
        return io.NodeOutput(cloud, glb_rel)


def _camera_files() -> list[str]:
    """Camera files in the input folder: not other JSON there, such as the bundled sample's metadata."""
    import folder_paths

    root = folder_paths.get_input_directory()
    return [n for n in input_files(PATH_FILE_EXTENSIONS) if camera.is_camera_file(os.path.join(root, n))]


@search_aliases("camera path", "orbit", "novel view", "camera motion", "dolly", "pan", "zoom")
class ReCaptureCameraTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureCameraTrajectory",
            display_name="ReCapture Camera Trajectory",
            category=CATEGORY_ANCHOR,
            description=(
                "The new camera path, one camera per frame, relative to each frame's source camera. Presets "
                "(orbit around the subject, pan, tilt, truck, pedestal, dolly, zoom, roll) or a camera file: "
                "ReCapture JSON, RealEstate10K / CameraCtrl .txt, NeRF transforms.json. The 3D editor on the "
                "node shows the path (and, after a run, the first frame's point cloud)."
            ),
            inputs=[
                setting_input(CameraConfig, "preset"),
                setting_input(CameraConfig, "amount"),
                setting_input(CameraConfig, "easing"),
                setting_input(CameraConfig, "frames"),
                setting_input(CameraConfig, "pivot_distance"),
                io.Combo.Input("camera_file", options=[NO_FILE] + _camera_files(), default=NO_FILE,
                               tooltip="A camera path file in the input folder; it replaces the preset and is "
                                       "resampled to the frame count."),
                PointCloudType.Input("point_cloud", optional=True,
                                     tooltip="The scene: gives the pivot distance, the frame count and the source "
                                             "field of view."),
                io.String.Input("custom_path", default="", multiline=False, optional=True,
                                tooltip="A path in ReCapture's camera file JSON (the path_json output's format), "
                                        "usually written by the 3D camera editor below; when not empty it "
                                        "replaces the preset and the camera file and is resampled to the "
                                        "frame count. Empty = use the preset."),
            ],
            outputs=[
                CameraPathType.Output("camera_path", display_name="camera_path", tooltip="One new camera per frame."),
                io.String.Output("path_json", display_name="path_json", tooltip="The path in ReCapture's camera file format (JSON)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, preset: str, amount: float, easing: str, pivot_distance: float,
                        camera_file: str) -> bool | str:
        return check_inputs(cls, locals(), input_folder=("camera_file",))

    @classmethod
    def execute(cls, preset: str, amount: float, easing: str, frames: int, pivot_distance: float,
                camera_file: str, point_cloud: PointCloud | None = None, custom_path: str = "") -> io.NodeOutput:
        # the library decides which input wins, as it does for the editor's preview (nodes/routes.py)
        choice = camera.choose_camera_path(
            preset, amount, easing, frames, pivot_distance,
            camera_file=None if camera_file == NO_FILE else input_path(camera_file), custom_path=custom_path,
            cloud=point_cloud, check_cancel=check_cancel)
        path_json = camera.path_to_json(choice.path)
        editor = _editor_data(path_json, choice, point_cloud)
        return io.NodeOutput(choice.path, json.dumps(path_json), ui={"recapture_camera": [editor]})


EDITOR_POINTS = 30_000  # enough to read the scene, small enough to redraw while orbiting


def _editor_data(path_json: dict, choice: camera.PathChoice, point_cloud: PointCloud | None) -> dict:
    """What the camera editor draws after a run: the path, which input it came from and its caption,
    the pivot, the source camera, and the first frame's points written to the temp folder (fetched
    with /view). Headless runs just ignore it."""
    data = {"path": path_json, "source": choice.source, "description": choice.description,
            "pivot_distance": choice.pivot_distance, "source_fov_deg": choice.source_fov_deg, "points": None}
    if point_cloud is None:
        return data
    import folder_paths

    from ..recapture.pointcloud_files import point_cloud_preview_points, write_preview_points

    points, colors = point_cloud_preview_points(point_cloud, frame=0, max_points=EDITOR_POINTS)
    temp = folder_paths.get_temp_directory()
    writable_folder(temp, "recapture", "ComfyUI's temp folder")  # a link there leading elsewhere: refused
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path("recapture/camera_editor", temp)
    filename = f"{name}_{counter:05}_.bin"
    count = write_preview_points(os.path.join(folder, filename), points, colors)
    data["points"] = {"filename": filename, "subfolder": subfolder, "type": "temp", "count": count}
    data["aspect"] = point_cloud.width / point_cloud.height
    return data


@search_aliases("novel view", "re-film", "anchor video", "validity mask", "reproject")
class ReCaptureRenderAnchor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureRenderAnchor",
            display_name="ReCapture Render Anchor",
            category=CATEGORY_ANCHOR,
            description=(
                "Renders each frame's point cloud from its new camera: the anchor video, with holes where "
                "the source never saw the scene, and its validity mask. Near points win; point footprints "
                "grow when the camera moves in, so zooming does not crack."
            ),
            inputs=[
                PointCloudType.Input("point_cloud"),
                CameraPathType.Input("camera_path"),
                setting_input(RenderConfig, "dilate_holes"),
            ],
            outputs=[
                io.Image.Output("anchor", display_name="anchor", tooltip="The anchor video: the scene seen from the new camera, black in holes."),
                io.Mask.Output("mask", display_name="mask", tooltip="Validity mask: 1 where a point landed, 0 in holes."),
                io.Mask.Output("holes", display_name="holes", tooltip="1 - mask: 1 in holes (ComfyUI's inpainting convention)."),
            ],
        )

    @classmethod
    def execute(cls, point_cloud: PointCloud, camera_path: CameraPath, dilate_holes: int) -> io.NodeOutput:
        from ..recapture.render import mask_overlay, render_anchor
        from ..recapture.video import preview_frames

        if camera_path.num_frames != point_cloud.num_frames:
            raise ValueError(
                f"the camera path has {camera_path.num_frames} frames but the point cloud has "
                f"{point_cloud.num_frames}: connect the point cloud to the Camera Trajectory node (it then "
                "uses the clip's frame count) or set its frames to match"
            )
        require_finite("point_cloud", point_cloud.colors,
                       "its colours come from the frames given to ReCapture Depth To Point Cloud")
        device = comfy.model_management.get_torch_device()
        progress = Progress(point_cloud.num_frames, unit="frame")
        anchor, mask = render_anchor(point_cloud.to("cpu"), camera_path, dilate_holes=dilate_holes,
                                     on_frame=progress.advance, device=device)
        # the node's player: the anchor, and the same with its holes painted (the mask overlay toggle),
        # painted on the small previews rather than the full frames
        small = preview_frames(anchor)
        small_mask = preview_frames(mask[..., None])[..., 0]
        return io.NodeOutput(anchor, mask, 1.0 - mask, ui=video_player(cls, small, mask_overlay(small, small_mask)))

