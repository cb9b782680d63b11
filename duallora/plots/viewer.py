"""A cine viewer for the raw (pre-harmonization) short-axis stacks, with ED/ES and masks.

``CineViewer`` is an ipywidgets panel: vendor and subject pickers, slice and frame sliders, the
ED and ES frames marked on a timeline (with buttons to jump there) and a toggle that overlays the
segmentation on the ED / ES frames. When no widget front end is available (papermill, a plain
script) ``static_cine_figure`` draws the same information as a still figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from duallora.plots.style import apply_style, vendor_color

# Unified labels of the harmonized cohort: 1 LV, 2 MYO, 3 RV.
SEG_NAMES = {1: "LV", 2: "MYO", 3: "RV"}
SEG_CMAP = ListedColormap([(0, 0, 0, 0), (0.84, 0.37, 0.0, 0.55), (0.0, 0.62, 0.45, 0.55),
                           (0.34, 0.71, 0.91, 0.55)])


@dataclass
class CineSubject:
    """One subject's raw cine ``(H, W, Z, T)`` with its ED/ES frames and masks (0-based)."""

    subject_id: str
    vendor: str
    cine: np.ndarray
    ed: int | None
    es: int | None
    masks: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.cine.shape[3])

    @property
    def n_slices(self) -> int:
        return int(self.cine.shape[2])

    def image(self, slice_idx: int, frame: int) -> np.ndarray:
        """One 2D slice scaled to its stack's 99.5th percentile, transposed for display."""
        return self.cine[:, :, slice_idx, frame].T / self._scale

    def mask(self, slice_idx: int, frame: int) -> np.ndarray | None:
        mask = self.masks.get(frame)
        return None if mask is None else mask[:, :, slice_idx].T

    def frame_name(self, frame: int) -> str:
        names = [n for n, f in (("ED", self.ed), ("ES", self.es)) if f == frame]
        return "/".join(names)

    def __post_init__(self) -> None:
        self._scale = float(np.percentile(self.cine, 99.5)) or 1.0


def widgets_can_render() -> bool:
    """Whether a widget front end can show the viewer (not under papermill / Agg / scripts)."""
    import os

    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def _closest_frame(cine: np.ndarray, image: np.ndarray) -> int | None:
    """Index of the cine frame identical (or closest) to ``image`` (M&Ms-2 gives no indices)."""
    if image.shape != cine.shape[:3]:
        return None
    errors = [float(np.abs(cine[..., t] - image).mean()) for t in range(cine.shape[3])]
    return int(np.argmin(errors))


def load_cine_subject(record, vendor: str | None = None) -> CineSubject:
    """Read a ``data_prep`` ``SubjectRecord``'s raw cine and its ED/ES masks (unified labels)."""
    from data_prep.conventions import acdc_to_unified
    from data_prep.volumes import load_array, read_frames

    cine, _ = load_array(record.cine, (4,))
    frames = read_frames(record)
    ed = record.ed_index if record.ed_index >= 0 else _closest_frame(cine, frames.ed)
    es = record.es_index if record.es_index >= 0 else _closest_frame(cine, frames.es)
    masks: dict[int, np.ndarray] = {}
    for index, seg in ((ed, frames.ed_seg), (es, frames.es_seg)):
        if index is not None and seg is not None and seg.shape == cine.shape[:3]:
            masks[index] = acdc_to_unified(seg) if record.dataset == "acdc" else seg
    return CineSubject(record.subject_id, vendor or record.vendor, cine, ed, es, masks)


def draw_cine(axes: tuple[plt.Axes, plt.Axes], subject: CineSubject, slice_idx: int,
              frame: int, overlay: bool = True) -> None:
    """Draw one slice/frame and the timeline (ED/ES markers, current frame) into two axes."""
    ax_img, ax_time = axes
    ax_img.clear()
    ax_img.imshow(subject.image(slice_idx, frame), cmap="gray", vmin=0, vmax=1)
    mask = subject.mask(slice_idx, frame) if overlay else None
    if mask is not None:
        ax_img.imshow(mask, cmap=SEG_CMAP, vmin=0, vmax=3, interpolation="nearest")
    tag = subject.frame_name(frame)
    ax_img.set_title(f"{subject.subject_id} ({subject.vendor})  slice {slice_idx + 1}/"
                     f"{subject.n_slices}  frame {frame + 1}/{subject.n_frames}"
                     + (f"  [{tag}]" if tag else ""), fontsize=9,
                     color=vendor_color(subject.vendor))
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.grid(False)
    ax_time.clear()
    ax_time.set_xlim(-0.5, subject.n_frames - 0.5)
    ax_time.set_ylim(0, 1)
    ax_time.set_yticks([])
    ax_time.grid(False)
    ax_time.axvline(frame, color=vendor_color(subject.vendor), lw=3)
    for name, index, colour in (("ED", subject.ed, "#D55E00"), ("ES", subject.es, "#0072B2")):
        if index is not None:
            ax_time.plot([index], [0.5], marker="v", ms=9, color=colour)
            ax_time.text(index, 0.95, name, ha="center", va="top", fontsize=8, color=colour)
    ax_time.set_xlabel("cardiac frame")


def static_cine_figure(subjects: list[CineSubject], n_slices: int = 3,
                       overlay: bool = True) -> plt.Figure:
    """A still version of the viewer: per subject, ED and ES at a few slices (masks overlaid)."""
    apply_style()
    fig, axes = plt.subplots(len(subjects), 2 * n_slices,
                             figsize=(1.5 * 2 * n_slices, 1.6 * len(subjects) + 0.5),
                             squeeze=False)
    for row, subject in enumerate(subjects):
        picks = np.linspace(0.2 * (subject.n_slices - 1), 0.7 * (subject.n_slices - 1),
                            n_slices).round().astype(int)
        for col, (phase, frame) in enumerate([(p, f) for p, f in
                                              (("ED", subject.ed), ("ES", subject.es))
                                              for _ in range(n_slices)]):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            frame = 0 if frame is None else frame
            slice_idx = int(picks[col % n_slices])
            ax.imshow(subject.image(slice_idx, frame), cmap="gray", vmin=0, vmax=1)
            mask = subject.mask(slice_idx, frame) if overlay else None
            if mask is not None:
                ax.imshow(mask, cmap=SEG_CMAP, vmin=0, vmax=3, interpolation="nearest")
            ax.set_title(f"{phase} z{slice_idx + 1}", fontsize=8)
        axes[row, 0].set_ylabel(f"{subject.vendor}\n{subject.subject_id.split('/')[-1]}",
                                fontsize=8, color=vendor_color(subject.vendor))
    handles = [plt.Rectangle((0, 0), 1, 1, color=SEG_CMAP(k)) for k in SEG_NAMES]
    fig.legend(handles, list(SEG_NAMES.values()), loc="lower center", ncol=3, fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Raw cine stacks at ED and ES (static view of the interactive viewer)",
                 fontsize=10)
    return fig


class CineViewer:
    """ipywidgets panel over ``{vendor: {subject_id: loader}}`` (loaders are called lazily and
    cached, so only the subjects you look at are read from disk)."""

    def __init__(self, catalogue: Mapping[str, Mapping[str, Callable[[], CineSubject]]]):
        import ipywidgets as widgets

        if not catalogue:
            raise ValueError("the viewer needs at least one vendor with one subject")
        self.catalogue = catalogue
        self._cache: dict[str, CineSubject] = {}
        vendors = list(catalogue)
        self.vendor = widgets.Dropdown(options=vendors, value=vendors[0], description="vendor")
        self.subject = widgets.Dropdown(options=list(catalogue[vendors[0]]),
                                        description="subject")
        self.slice = widgets.IntSlider(min=1, max=1, value=1, description="slice")
        self.frame = widgets.IntSlider(min=1, max=1, value=1, description="frame")
        self.overlay = widgets.Checkbox(value=True, description="segmentation (ED/ES)")
        self.to_ed = widgets.Button(description="go to ED")
        self.to_es = widgets.Button(description="go to ES")
        self.output = widgets.Output()
        self.vendor.observe(self._on_vendor, names="value")
        self.subject.observe(self._on_subject, names="value")
        for control in (self.slice, self.frame, self.overlay):
            control.observe(lambda _change: self.draw(), names="value")
        self.to_ed.on_click(lambda _b: self._jump(self.current.ed))
        self.to_es.on_click(lambda _b: self._jump(self.current.es))
        self.widget = widgets.VBox([
            widgets.HBox([self.vendor, self.subject]),
            widgets.HBox([self.slice, self.frame]),
            widgets.HBox([self.overlay, self.to_ed, self.to_es]),
            self.output,
        ])
        self._on_subject(None)

    @property
    def current(self) -> CineSubject:
        key = f"{self.vendor.value}/{self.subject.value}"
        if key not in self._cache:
            self._cache[key] = self.catalogue[self.vendor.value][self.subject.value]()
        return self._cache[key]

    def _on_vendor(self, _change: object) -> None:
        self.subject.options = list(self.catalogue[self.vendor.value])
        self.subject.value = self.subject.options[0]

    def _on_subject(self, _change: object) -> None:
        subject = self.current
        self.slice.max, self.frame.max = subject.n_slices, subject.n_frames
        self.slice.value = subject.n_slices // 2 + 1
        self.frame.value = (subject.ed or 0) + 1
        self.draw()

    def _jump(self, frame: int | None) -> None:
        if frame is not None:
            self.frame.value = frame + 1

    def draw(self) -> None:
        subject = self.current
        self.output.clear_output(wait=True)
        with self.output:
            fig, axes = plt.subplots(2, 1, figsize=(4.6, 5.2),
                                     gridspec_kw={"height_ratios": [8, 1]})
            draw_cine(axes, subject, min(self.slice.value, subject.n_slices) - 1,
                      min(self.frame.value, subject.n_frames) - 1, self.overlay.value)
            plt.show()
            plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
