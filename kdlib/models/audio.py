"""Audio classifiers over log-mel spectrograms ``[B, 1, n_mels, frames]`` (paper Section 4.1.2, Appendix E).

- ``vggish``: the VGG-like CNN of Hershey et al. (2017), trained from scratch.
- ``ast``: the Audio Spectrogram Transformer of Gong et al. (2021), trained from scratch (no ImageNet weights).

Both accept any frame count: VGGish pools adaptively, AST interpolates its positional embedding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SelfAttention


class VGGish(nn.Module):
    """VGGish: 3x3 conv blocks 64 | 128 | 256-256 | 512-512, each block ending in 2x2 max-pooling, then fully
    connected 4096-4096-128 (the VGGish embedding) and a linear classifier, ReLU throughout, no BatchNorm or
    dropout, as Hershey et al. (2017).

    Adapted to 32 mels: the four poolings leave 2 mel rows; adaptive average pooling to 2 x 3 (exactly the
    3 pooled frames of a 1 s clip; 4 s clips are averaged into 3 time bins) replaces VGGish's fixed 96 x 64
    input, so the first FC layer sees 512 * 6 features. ``width`` multiplies the conv and hidden FC widths,
    not the 128-d embedding (1.0: about 34M parameters; 0.125: 8-16-32-32-64-64 channels, FC 512-512-128,
    about 0.6M). Weights: He-normal
    (convs: fan-out, as torchvision's VGG; linear layers: fan-in) and zero biases, so the deep plain ReLU
    stack trains with SGD (PyTorch's default init shrinks the signal layer by layer: logits ~6x smaller).
    """

    BLOCKS = ((64,), (128,), (256, 256), (512, 512))
    POOLED = (2, 3)

    def __init__(self, num_classes: int, width: float = 1.0, hidden: int = 4096, embedding: int = 128):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        scale = lambda n: max(1, round(n * width))
        layers, channels = [], 1
        for block in self.BLOCKS:
            for out in block:
                layers += [nn.Conv2d(channels, scale(out), 3, padding=1), nn.ReLU(inplace=True)]
                channels = scale(out)
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(self.POOLED)
        flat = channels * self.POOLED[0] * self.POOLED[1]
        self.embeddings = nn.Sequential(
            nn.Linear(flat, scale(hidden)), nn.ReLU(inplace=True),
            nn.Linear(scale(hidden), scale(hidden)), nn.ReLU(inplace=True),
            nn.Linear(scale(hidden), embedding), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(embedding, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.embeddings(x))


class AST(nn.Module):
    """Audio Spectrogram Transformer (Gong et al., 2021), from scratch.

    Overlapping ``patch`` x ``patch`` patches with stride ``stride`` (a strided Conv2d) become tokens; a cls
    and a distillation token (DeiT style) and a learned positional embedding are added; a pre-norm
    transformer encoder (GELU MLP of 4x width) follows, and the head is LayerNorm + Linear on the mean of the
    two tokens' outputs, as AST. Defaults: AST-Base width (768 dims, 12 layers, 12 heads); AST's 16/10 patches
    are for 128 mels, so for 32 mels we use 8 x 8 patches with stride 4: a 7 x 14 token grid for a 1 s clip
    (63 frames), 7 x 61 for 4 s. The positional embedding is made for ``n_mels`` x ``frames`` and bilinearly
    interpolated for other input sizes (as AST adapts DeiT's). Weights: truncated normal (std 0.02) for
    tokens, positions and linear layers, zero biases.
    """

    def __init__(self, num_classes: int, n_mels: int = 32, frames: int = 63, embed_dim: int = 768,
                 depth: int = 12, heads: int = 12, patch: int = 8, stride: int = 4, dropout: float = 0.0):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by heads={heads}")
        if min(n_mels, frames) < patch or stride < 1:
            raise ValueError(f"patch={patch}, stride={stride} do not fit a {n_mels} x {frames} spectrogram")
        self.patch, self.stride = patch, stride
        self.patch_embed = nn.Conv2d(1, embed_dim, patch, stride)
        self.grid = self.grid_size(n_mels, frames)
        self.tokens = nn.Parameter(torch.zeros(1, 2, embed_dim))  # cls and distillation tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + self.grid[0] * self.grid[1], embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, heads, 4 * embed_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        for block in self.encoder.layers:  # self-attention a pack can replace by its packed layer
            block.self_attn = SelfAttention.replacing(block.self_attn)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        for p in (self.tokens, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def grid_size(self, n_mels: int, frames: int) -> tuple[int, int]:
        return (n_mels - self.patch) // self.stride + 1, (frames - self.patch) // self.stride + 1

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional embeddings of the patch tokens for a ``grid`` of patches, ``[1, rows * cols, D]``."""
        pos = self.pos_embed[:, 2:]
        if grid == self.grid:
            return pos
        pos = pos.transpose(1, 2).reshape(len(pos), -1, *self.grid)  # len 1, or a pack's rows
        return F.interpolate(pos, size=grid, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [B, D, rows, cols]
        x = x.flatten(2).transpose(1, 2) + self.positions(tuple(x.shape[2:]))
        tokens = (self.tokens + self.pos_embed[:, :2]).expand(len(x), -1, -1)
        x = self.encoder(torch.cat([tokens, x], dim=1))
        return self.head((x[:, 0] + x[:, 1]) / 2)


def vggish(num_classes: int, **kwargs) -> VGGish:
    """VGGish over 32-mel spectrograms; kwargs: ``width``, ``hidden``, ``embedding``."""
    return VGGish(num_classes, **kwargs)


def ast(num_classes: int, **kwargs) -> AST:
    """AST over mel spectrograms; kwargs: ``n_mels``, ``frames``, ``embed_dim``, ``depth``, ``heads``,
    ``patch``, ``stride``, ``dropout``."""
    return AST(num_classes, **kwargs)
