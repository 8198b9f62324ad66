"""Image and video generation with diffusers: text-to-image, image-to-image, instruction-guided
image editing, text-to-video, and ControlNet generation conditioned on a control image.

The model folder is a diffusers pipeline as written by ``save_pretrained``. torch, diffusers,
PIL and imageio are imported only inside methods, so importing this module stays cheap.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput

if TYPE_CHECKING:
    from PIL import Image

    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

log = logging.getLogger(__name__)

# The pipeline class a card gets when its options name none, by the first task it serves.
DEFAULT_CLASSES: dict[str, str] = {
    "text-to-image": "StableDiffusionPipeline",
    "image-to-image": "StableDiffusionImg2ImgPipeline",
    "image-editing": "StableDiffusionInstructPix2PixPipeline",
    "text-to-video": "TextToVideoSDPipeline",
    "pose-text-to-image": "StableDiffusionControlNetPipeline",
    "canny-text-to-image": "StableDiffusionControlNetPipeline",
    "depth-text-to-image": "StableDiffusionControlNetPipeline",
    "segmentation-text-to-image": "StableDiffusionControlNetPipeline",
    "line-text-to-image": "StableDiffusionControlNetPipeline",
    "scribble-text-to-image": "StableDiffusionControlNetPipeline",
}
# What each task asks of the pipeline: a prompt only, a source image, or a control image.
MODES: dict[str, str] = {
    "text-to-image": "text",
    "image-to-image": "image",
    "image-editing": "edit",
    "text-to-video": "video",
    "pose-text-to-image": "control",
    "canny-text-to-image": "control",
    "depth-text-to-image": "control",
    "segmentation-text-to-image": "control",
    "line-text-to-image": "control",
    "scribble-text-to-image": "control",
}
REINSTALL = "reinstall it with: python download_models.py, or check that the folder holds a diffusers pipeline"


def torch_device(settings_device: str, model: str) -> str:
    """``cuda`` when a GPU is usable and the settings allow it, else ``cpu``.

    Example::

        torch_device("auto", "sd-1.5")  # "cuda" on a GPU machine, "cpu" elsewhere
    """
    import torch

    if settings_device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if settings_device == "cuda":
        raise ExpertError(f"device 'cuda' was asked for model '{model}', but torch sees no CUDA GPU",
                          "install a CUDA build of torch, or set LOCALGPT_DEVICE=cpu")
    return "cpu"


def open_image(path: str, what: str, model: str) -> Image.Image:
    """An input file decoded as an RGB PIL image; InputError when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"the {what} '{Path(path).name}' given to model '{model}' is not a decodable image: {exc}",
                         "give a PNG or JPEG file") from exc


def _from_pretrained(loader: Any, path: str, variant: str | None, **kwargs: Any) -> Any:
    """``loader.from_pretrained``, with the weights ``variant`` when there is one, else the plain weights."""
    if variant:
        try:
            return loader.from_pretrained(path, variant=str(variant), **kwargs)
        except (OSError, ValueError):
            log.info("no %s weights in %s; loading the plain ones", variant, path)
    return loader.from_pretrained(path, **kwargs)


def _multiple_of_8(n: int) -> int:
    """``n`` rounded down to a multiple of 8 (at least 8), as Stable Diffusion's latents need."""
    return max(8, n - n % 8)


class DiffusersExpert(Expert):
    """A diffusers pipeline; serves the tasks listed in ``DEFAULT_CLASSES`` that its card names.

    Card options: ``pipeline_class`` (the diffusers class, default by the card's first task; e.g.
    ``StableDiffusionXLControlNetPipeline`` for an SDXL ControlNet),
    ``steps`` (default 25), ``guidance`` (classifier-free guidance scale, default 7.5),
    ``width``/``height`` (default 512 or the UNet's native size), ``negative_prompt``,
    ``strength`` (image-to-image, default 0.75), ``image_guidance`` (image editing, default 1.5),
    ``max_side`` (a larger source image is worked on scaled down, then resized back; default 1024),
    ``frames`` and ``fps`` (text-to-video, default 16 and 8), ``control_scale`` (ControlNet,
    default 1.0), ``min_size``/``max_size`` (accepted control image sides, default 64 and 2048),
    ``scribble_threshold`` (scribble: grey levels a line differs from the sketch's ground, default 64),
    ``variant`` (weights variant such as "fp16"), ``base_model`` (for a folder holding only a
    ControlNet: the store id, folder or hub repo of the Stable Diffusion pipeline it plugs into).
    A run is seeded with ``settings.seed``, so the same request gives the same image.

    Example::

        expert = DiffusersExpert(card, ExpertContext(settings))
        expert.load()
        result = expert.run("text-to-image", {"text": "a red bicycle"}, run_dir)
        result.outputs["image"]  # ".../<sha256 prefix>.png"
    """

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._pipe: Any = None
        self._derived: dict[str, Any] = {}
        self.device = "cpu"
        self.pipeline_class = str(card.options.get("pipeline_class")
                                  or DEFAULT_CLASSES.get(card.tasks[0] if card.tasks else "", ""))

    @property
    def runtime(self) -> str:
        """Where the pipeline runs, e.g. ``pytorch/cpu``."""
        return f"pytorch/{self.device}"

    def load(self) -> None:
        """Load the pipeline from the model folder onto the GPU (fp16) or the CPU (fp32)."""
        import diffusers
        import torch

        folder = self.card.path
        split = bool(self.card.options.get("base_model"))
        marker = "config.json" if split else "model_index.json"
        if folder is None or not (folder / marker).is_file():
            what = "ControlNet (config.json)" if split else "diffusers pipeline (model_index.json)"
            raise ExpertError(f"model '{self.card.id}' has no {what} in its folder", REINSTALL)
        cls = getattr(diffusers, self.pipeline_class, None) if self.pipeline_class else None
        if cls is None:
            raise ExpertError(f"model '{self.card.id}' names pipeline class '{self.pipeline_class}', "
                              "which this diffusers does not have",
                              "set options.pipeline_class in its model.json to a diffusers pipeline class")
        self.device = torch_device(self.ctx.settings.device, self.card.id)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        variant = self.card.options.get("variant")
        try:
            if split:  # a ControlNet alone, plugged into the Stable Diffusion pipeline named by options.base_model
                controlnet = _from_pretrained(diffusers.ControlNetModel, str(folder), variant, torch_dtype=dtype,
                                              local_files_only=True)
                base, base_variant = self._base_model()
                pipe = _from_pretrained(cls, base, base_variant, controlnet=controlnet, torch_dtype=dtype,
                                        local_files_only=True)
            else:
                pipe = _from_pretrained(cls, str(folder), variant, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ExpertError(f"model '{self.card.id}' could not be loaded as {self.pipeline_class}: {exc}",
                              REINSTALL) from exc
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        super().load()

    def _base_model(self) -> tuple[str, str | None]:
        """The folder of the base pipeline a lone ControlNet plugs into (a model of the store or a
        folder) and its weights variant; nothing is fetched at run time."""
        from localgpt.store.catalog import MANIFEST, read_manifest

        opts = self.card.options
        base = str(opts["base_model"])
        for folder in (self.ctx.settings.store / base, Path(base).expanduser()):
            if (folder / "model_index.json").is_file():
                variant = opts.get("base_variant")
                if variant is None and (folder / MANIFEST).is_file():
                    variant = read_manifest(folder / MANIFEST).options.get("variant")
                return str(folder), variant
        raise ExpertError(f"model '{self.card.id}' plugs into base model '{base}', which is not installed",
                          f"install it into the store as '{base}' (e.g. localgpt models pull --hub REPO "
                          f"--task text-to-image --id {base}), or set options.base_model to its folder")

    # --- running ---

    def _size(self, inputs: dict[str, str]) -> tuple[int, int]:
        """The output (width, height): card options, else the UNet's native size."""
        opts = self.card.options
        native = 512
        unet = getattr(self._pipe, "unet", None)
        scale = int(getattr(self._pipe, "vae_scale_factor", 8))
        sample = getattr(getattr(unet, "config", None), "sample_size", None)
        if isinstance(sample, int):
            native = sample * scale
        return _multiple_of_8(int(opts.get("width", native))), _multiple_of_8(int(opts.get("height", native)))

    def _pipe_for(self, mode: str) -> Any:
        """The loaded pipeline, or one sharing its weights that fits ``mode`` (a text-to-image model
        also serves image-to-image through diffusers' AutoPipelineForImage2Image.from_pipe)."""
        params = inspect.signature(self._pipe.__call__).parameters
        if mode != "image" or "strength" in params:
            return self._pipe
        if mode not in self._derived:
            import diffusers

            try:
                derived = diffusers.AutoPipelineForImage2Image.from_pipe(self._pipe)
            except (ValueError, KeyError, TypeError) as exc:
                raise ExpertError(f"model '{self.card.id}' ({self.pipeline_class}) cannot serve image-to-image: {exc}",
                                  "choose an image-to-image model, or remove the task from its model.json") from exc
            derived.set_progress_bar_config(disable=True)
            self._derived[mode] = derived
        return self._derived[mode]

    def _progress(self, pipe: Any, task: str, steps: int) -> tuple[dict[str, Any], list[int]]:
        """Keyword arguments that make the pipeline log each denoising step; the list collects steps."""
        seen: list[int] = []
        model = self.card.id

        def note(step: int) -> None:
            seen.append(step)
            log.info("%s (%s): step %d/%d", model, task, step + 1, steps)

        params = inspect.signature(pipe.__call__).parameters
        if "callback_on_step_end" in params:
            def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                note(step)
                return kwargs
            return {"callback_on_step_end": on_step_end}, seen
        if "callback" in params:  # older pipelines (text-to-video) take callback(step, timestep, latents)
            return {"callback": lambda step, timestep, latents: note(step), "callback_steps": 1}, seen
        return {}, seen

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Generate an image (PNG) or a video (MP4) into the run folder."""
        import torch

        mode = MODES.get(task)
        if mode is None or task not in self.card.tasks:
            raise ExpertError(f"model '{self.card.id}' serves {', '.join(self.card.tasks)}, not '{task}'")
        if not self.loaded:
            self.load()
        opts = self.card.options
        prompt = inputs.get("text", "").strip()
        if mode != "image" and not prompt:
            raise InputError(f"{task} with model '{self.card.id}' needs a non-empty 'text'")
        steps = int(opts.get("steps", 25))
        guidance = float(opts.get("guidance", 7.5))
        seed = int(self.ctx.settings.seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        kwargs: dict[str, Any] = {"prompt": prompt, "num_inference_steps": steps, "guidance_scale": guidance,
                                  "generator": generator}
        if opts.get("negative_prompt"):
            kwargs["negative_prompt"] = str(opts["negative_prompt"])
        data: dict[str, Any] = {"seed": seed, "steps": steps, "guidance": guidance}
        keep: tuple[int, int] | None = None

        if mode in ("text", "video"):
            width, height = self._size(inputs)
            kwargs.update(width=width, height=height)
        elif mode in ("image", "edit"):
            source = open_image(inputs.get("image", ""), "image", self.card.id)
            keep = source.size  # generated at most max_side pixels a side, then resized back to this
            scale = min(1.0, int(opts.get("max_side", 1024)) / max(source.size))
            width, height = _multiple_of_8(round(source.width * scale)), _multiple_of_8(round(source.height * scale))
            kwargs["image"] = source.resize((width, height)) if (width, height) != source.size else source
            data["generated_size"] = [width, height]
            if mode == "image":
                kwargs["strength"] = float(opts.get("strength", 0.75))
                data["strength"] = kwargs["strength"]
            else:
                kwargs["image_guidance_scale"] = float(opts.get("image_guidance", 1.5))
                data["image_guidance"] = kwargs["image_guidance_scale"]
        else:  # control
            control = self._control_image(task, inputs.get("image", ""))
            if task == "scribble-text-to-image":  # a user's sketch, either way round: white lines on black
                from localgpt.experts.control import scribble_map

                control, data["sketch"] = scribble_map(control, Path(inputs.get("image", "")).name,
                                                       int(opts.get("scribble_threshold", 64)))
            width, height = control.size
            kwargs.update(image=control, width=width, height=height,
                          controlnet_conditioning_scale=float(opts.get("control_scale", 1.0)))
            data["control_scale"] = kwargs["controlnet_conditioning_scale"]
        if mode == "video":
            frames = int(opts.get("frames", 16))
            kwargs.update(num_frames=frames, output_type="np")
        pipe = self._pipe_for(mode)
        progress, seen = self._progress(pipe, task, steps)
        kwargs.update(progress)

        begin = time.perf_counter()
        try:
            with torch.inference_mode():
                result = pipe(**kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            raise ExpertError(f"model '{self.card.id}' ran out of GPU memory at {width}x{height}",
                              "use a smaller size (options.width/height) or set LOCALGPT_DEVICE=cpu") from exc
        except (RuntimeError, ValueError) as exc:
            raise ExpertError(f"model '{self.card.id}' failed on {task}: {exc}") from exc
        data.update(seconds=round(time.perf_counter() - begin, 3), steps_run=len(seen), runtime=self.runtime)

        if mode == "video":
            fps = int(opts.get("fps", 8))
            path = self._write_video(result.frames, fps, out)
            data.update(size=[width, height], frames=int(opts.get("frames", 16)), fps=fps)
            return ExpertOutput(outputs={"video": str(path)}, data=data)
        image = result.images[0]
        if keep is not None and image.size != keep:
            image = image.resize(keep)
        flagged = getattr(result, "nsfw_content_detected", None)
        if flagged:
            data["nsfw"] = bool(flagged[0])
        data["size"] = list(image.size)
        return ExpertOutput(outputs={"image": str(self._save_png(image, out))}, data=data)

    def _control_image(self, task: str, path: str) -> Image.Image:
        """The control image, checked: decodable and of a size the pipeline can use."""
        opts = self.card.options
        control = open_image(path, "control image", self.card.id)
        low, high = int(opts.get("min_size", 64)), int(opts.get("max_size", 2048))
        w, h = control.size
        if min(w, h) < low or max(w, h) > high:
            raise InputError(
                f"the control image '{Path(path).name}' for {task} is {w}x{h} pixels; model '{self.card.id}' "
                f"takes sides from {low} to {high} pixels",
                "resize the image, or make the control image from a photo of a usual size")
        size = (_multiple_of_8(w), _multiple_of_8(h))
        return control.resize(size) if size != control.size else control

    @staticmethod
    def _save_png(image: Image.Image, out: RunDir) -> Path:
        """Save a PIL image as PNG into the run folder."""
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return out.save(buf.getvalue(), ".png")

    def _write_video(self, frames: Any, fps: int, out: RunDir) -> Path:
        """Write frames (batch, frames, H, W, 3 floats in 0..1, or a list of PIL images) as an H.264 MP4."""
        import imageio.v2 as imageio
        import numpy as np

        clip = frames[0]
        if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8:
            clip = np.asarray(clip, dtype=np.float32)
            clip = (np.clip(clip, 0.0, 1.0) * 255).round().astype(np.uint8)
        tmp = out.temp_path(".mp4").with_suffix("")  # ffmpeg picks the container from the ".mp4" ending
        try:
            with imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    macro_block_size=8, pixelformat="yuv420p") as writer:
                for frame in clip:
                    writer.append_data(frame)  # type: ignore[attr-defined]
        except Exception as exc:  # imageio and ffmpeg raise their own types
            tmp.unlink(missing_ok=True)
            raise ExpertError(f"model '{self.card.id}' could not write its video: {exc}",
                              "install imageio-ffmpeg: pip install -e '.[torch]'") from exc
        return out.adopt(tmp, ".mp4")

    def close(self) -> None:
        """Drop the pipeline and free its memory (and the GPU cache)."""
        on_gpu = self.device == "cuda"
        self._pipe = None
        self._derived.clear()
        gc.collect()
        if on_gpu:
            import torch

            torch.cuda.empty_cache()
        super().close()
