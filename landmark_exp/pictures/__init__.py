"""Pictures a clinician reads: X-ray and TensorBoard overlays (`overlay`), and plots of a scored split's errors
and of a sweep's validation MRE (`plots`)."""

from landmark_exp.pictures.overlay import (
    draw_overlay,
    error_colour,
    legend_lines,
    place_labels,
    style_for,
    tensorboard_overlay,
)
from landmark_exp.pictures.plots import (
    error_per_landmark_plot,
    sdr_curve_plot,
    sweep_curves,
    sweep_plot,
    write_report_plots,
    write_sweep_plot,
)

__all__ = ["draw_overlay", "error_colour", "error_per_landmark_plot", "legend_lines", "place_labels", "sdr_curve_plot",
           "style_for", "sweep_curves", "sweep_plot", "tensorboard_overlay", "write_report_plots", "write_sweep_plot"]
