"""Drawing predictions: masks blended with a lightened colour, only above the threshold."""
import numpy as np

from ppdet.modeling.detections import Detections
from ppdet.utils.visualizer import colormap, draw_detections


def test_masks_are_blended_and_low_scores_left_out():
    image = np.full((40, 60, 3), 100, np.uint8)
    masks = np.zeros((2, 40, 60), np.uint8)
    masks[0, 10:20, 10:30] = 1
    masks[1, 25:35, 40:55] = 1
    det = Detections(0, masks, np.array([1, 0]), np.array([0.9, 0.2], np.float32),
                     np.array([[10, 10, 30, 20], [40, 25, 55, 35]], np.float32))
    drawn = draw_detections(image, det, ['a', 'b'], threshold=0.5)
    colour = 0.6 * colormap(2)[0] + 0.4 * 255
    np.testing.assert_allclose(drawn[15, 20], 0.3 * 100 + 0.7 * colour, atol=1)
    np.testing.assert_array_equal(drawn[30, 47], image[30, 47])      # score 0.2 < 0.5
    np.testing.assert_array_equal(drawn[38, 5], image[38, 5])        # background untouched
