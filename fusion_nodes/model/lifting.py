"""Camera-to-BEV lifting: where each BEV cell centre lands in the camera image.

The sampling grid depends only on the calibration and the grid, so it is computed once here
and stored in the network as a constant buffer; the exported graph then holds one static
GridSample per height and feature map, and no data-dependent geometry.
"""

import numpy as np

from fusion_nodes.core.config import BevGrid, CameraModel

# grid_sample treats coordinates beyond [-1, 1] as outside and pads them with zeros.
OUTSIDE = -2.0
MIN_DEPTH_M = 0.5


def bev_sampling_grid(grid: BevGrid, camera: CameraModel,
                      height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (rows, cols, 2) of cell centres at height_m, and validity.

    Coordinates follow grid_sample with align_corners=False: -1 and +1 are the outer edges
    of the image, so the same grid is right for any feature-map resolution of the full frame.
    Cells behind the camera, nearer than MIN_DEPTH_M or outside the image get OUTSIDE.
    """
    xs, ys = grid.cell_centres()
    points = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, height_m)], axis=1)
    pixels, depth = camera.project(points)
    u, v = pixels[:, 0], pixels[:, 1]
    with np.errstate(invalid='ignore'):
        valid = ((depth > MIN_DEPTH_M) & (u >= 0.0) & (u < camera.width)
                 & (v >= 0.0) & (v < camera.height))
    gx = np.where(valid, 2.0 * u / camera.width - 1.0, OUTSIDE)
    gy = np.where(valid, 2.0 * v / camera.height - 1.0, OUTSIDE)
    sampling = np.stack([gx, gy], axis=1).reshape(*grid.shape, 2).astype(np.float32)
    return sampling, valid.reshape(grid.shape)
