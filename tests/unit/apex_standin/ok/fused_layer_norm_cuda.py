import torch


def forward_affine(input, normalized_shape, weight, bias, eps):
    return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
