"""core.tensors: the one mask of valid positions from lengths."""
import torch

from core.tensors import lengths_to_mask


def test_lengths_to_mask():
    lengths = torch.tensor([3, 0, 5])
    mask = lengths_to_mask(lengths)
    assert mask.dtype == torch.bool and mask.device == lengths.device
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    wider = lengths_to_mask(lengths, 7)
    assert wider.shape == (3, 7) and wider.sum(1).tolist() == [3, 0, 5]
    assert lengths_to_mask(lengths, 2).all(1).tolist() == [True, False, True]  # lengths past max_len fill the row
    assert lengths_to_mask(torch.zeros(0, dtype=torch.long)).shape == (0, 0)
