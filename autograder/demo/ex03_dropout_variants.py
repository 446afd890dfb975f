"""Demo submissions for Exercise 3: a correct answer written differently from the reference, a
partly correct one and one with the classic bugs of each variant.

The correct answer deliberately differs from the reference (``torch.bernoulli`` masks,
``masked_fill`` for alpha dropout, a transposed convolution to grow DropBlock's blocks, all
Monte Carlo samples in one batch), so the demo shows a different correct implementation getting
full marks through nbgrader; its DropPath is timm's floor(keep + U) recipe.
"""

_VALID = '''
def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    return float(p)
'''

_SPATIAL = _VALID + '''

def spatial_dropout(x, p=0.5, training=True, generator=None):
    """Channel-wise dropout with a Bernoulli mask of shape (N, C, 1, ...)."""
    p = _check_p(p)
    if x.dim() < 3:
        raise ValueError(f"spatial_dropout needs (N, C, *spatial), got {tuple(x.shape)}")
    if not training or p == 0:
        return x.clone()
    shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    keep = torch.bernoulli(torch.full(shape, 1.0 - p, device=x.device), generator=generator)
    return x * keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))
'''

_SPATIAL_ELEMENTWISE = _VALID + '''

def spatial_dropout(x, p=0.5, training=True, generator=None):
    """Forgets the channels: drops single elements."""
    p = _check_p(p)
    if x.dim() < 3:
        raise ValueError("need (N, C, *spatial)")
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep * (0.0 if p == 1 else 1.0 / (1.0 - p))
'''

_ALPHA = '''
def alpha_dropout(x, p=0.5, training=True, generator=None):
    """Alpha dropout with masked_fill."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    saturation = -SELU_LAMBDA * SELU_ALPHA
    a = 1.0 / math.sqrt((1 - p) * (1 + p * saturation ** 2))
    b = -a * saturation * p
    dropped = torch.rand(x.shape, generator=generator, device=x.device) < p
    return (a * x + b).masked_fill(dropped, a * saturation + b)
'''

_ALPHA_ZERO = '''
def alpha_dropout(x, p=0.5, training=True, generator=None):
    """Sets dropped units to 0 before the affine map (plain dropout's habit)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    saturation = -SELU_LAMBDA * SELU_ALPHA
    a = 1.0 / math.sqrt((1 - p) * (1 + p * saturation ** 2))
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return a * (x * keep) - a * saturation * p
'''

_DROPBLOCK = '''
def dropblock(x, p, block_size, training=True, generator=None):
    """DropBlock; blocks grown from their corners with a transposed convolution."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if x.dim() != 4:
        raise ValueError(f"dropblock needs (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if type(block_size) is not int or not 1 <= block_size <= min(h, w):
        raise ValueError(f"block_size must be an int in [1, {min(h, w)}], got {block_size!r}")
    if not training or p == 0:
        return x
    if p == 1:
        return torch.zeros_like(x)
    fit_h, fit_w = h - block_size + 1, w - block_size + 1
    gamma = min(1.0, p * h * w / (block_size ** 2 * fit_h * fit_w))
    corners = torch.bernoulli(torch.full((n * c, 1, fit_h, fit_w), gamma, device=x.device),
                              generator=generator)
    cover = F.conv_transpose2d(corners, torch.ones(1, 1, block_size, block_size, device=x.device))
    keep = (cover.reshape(n, c, h, w) == 0).to(x.dtype)
    n_kept = int(keep.sum())
    return torch.zeros_like(x) if n_kept == 0 else x * keep * (x.numel() / n_kept)
'''

_LOCKED = '''
def locked_dropout(x, p=0.5, training=True, generator=None):
    """One Bernoulli mask per sequence, broadcast over time."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if x.dim() != 3:
        raise ValueError(f"locked_dropout needs (T, N, F), got {tuple(x.shape)}")
    if not training or p == 0:
        return x
    keep = torch.bernoulli(torch.full(x.shape[1:], 1.0 - p, device=x.device), generator=generator)
    return x * keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))
'''

_LOCKED_PER_STEP = '''
def locked_dropout(x, p=0.5, training=True, generator=None):
    """A new mask at every time step (ordinary dropout)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if x.dim() != 3:
        raise ValueError("need (T, N, F)")
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep * (0.0 if p == 1 else 1.0 / (1.0 - p))
'''

_DROPCONNECT = '''
class DropConnectLinear(torch.nn.Module):
    """DropConnect built around a torch.nn.Linear's parameters."""

    def __init__(self, in_features, out_features, p=0.5, bias=True):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
            raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
        self.p = p
        linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x):
        weight = self.weight
        if self.training:
            keep = torch.bernoulli(torch.full_like(weight, 1.0 - self.p))
            weight = weight * keep * (0.0 if self.p == 1 else 1.0 / (1.0 - self.p))
        return F.linear(x, weight, self.bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, p={self.p}"
'''

_DROPCONNECT_BIAS = '''
class DropConnectLinear(torch.nn.Module):
    """Drops the bias along with the weights."""

    def __init__(self, in_features, out_features, p=0.5, bias=True):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
            raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
        self.p = p
        linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x):
        if not self.training:
            return F.linear(x, self.weight, self.bias)
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        w_keep = (torch.rand(self.weight.shape, device=x.device) >= self.p) * scale
        b_keep = (torch.rand(self.bias.shape, device=x.device) >= self.p) * scale
        return F.linear(x, self.weight * w_keep, self.bias * b_keep)

    def extra_repr(self):
        return f"p={self.p}"
'''

_ATTENTION = '''
def attention_with_dropout(q, k, v, p=0.0, training=True, generator=None):
    """Attention with einsum; dropout on the softmax weights."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    weights = torch.einsum("...ld,...sd->...ls", q, k).div(math.sqrt(q.shape[-1])).softmax(-1)
    if training and p > 0:
        keep = torch.bernoulli(torch.full_like(weights, 1.0 - p), generator=generator)
        weights = weights * keep * (0.0 if p == 1 else 1.0 / (1.0 - p))
    return torch.einsum("...ls,...sd->...ld", weights, v)
'''

_ATTENTION_OUTPUT = '''
def attention_with_dropout(q, k, v, p=0.0, training=True, generator=None):
    """Applies dropout to the attention output instead of the weights."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v
    if training and p > 0:
        keep = torch.rand(out.shape, generator=generator, device=out.device) >= p
        out = out * keep * (0.0 if p == 1 else 1.0 / (1.0 - p))
    return out
'''

_MC = '''
def mc_dropout_predict(model, x, n_samples=50):
    """All samples in one batch: BatchNorm stays in eval mode, so rows do not interact."""
    if type(n_samples) is not int or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    family = (torch.nn.modules.dropout._DropoutNd, GaussianDropout)
    before = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, family):
                module.train()
        with torch.no_grad():
            out = model(x.repeat(n_samples, *([1] * (x.dim() - 1))))
    finally:
        for module, training in before:
            module.training = training
    samples = out.reshape(n_samples, x.shape[0], *out.shape[1:])
    return samples.mean(dim=0), samples.std(dim=0)
'''

_MC_TRAIN = '''
def mc_dropout_predict(model, x, n_samples=50):
    """The tempting shortcut: model.train() switches dropout on (and BatchNorm too)."""
    if type(n_samples) is not int or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            samples = torch.stack([model(x) for _ in range(n_samples)])
    finally:
        model.train(was_training)
    return samples.mean(dim=0), samples.std(dim=0)
'''


def _drop_path(doc: str, body: str) -> str:
    """A demo drop_path: the validation every version shares, its docstring, then its own body."""
    return (
        "\ndef drop_path(x, p=0.0, training=True, generator=None):\n"
        f'    """{doc}"""\n'
        "    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):\n"
        '        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")\n'
        "    if x.dim() == 0:\n"
        '        raise ValueError("drop_path needs x of shape (N, ...)")\n'
        + body
    )


_DROPPATH = _drop_path(
    "timm's recipe: floor(keep + U) is 1 with probability keep, one draw per sample.", """\
    if not training or p == 0:
        return x
    keep = 1.0 - p
    if keep == 0:
        return torch.zeros_like(x)
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    noise = keep + torch.rand(shape, generator=generator, device=x.device)
    return x / keep * noise.floor().to(x.dtype)
""")

_DROPPATH_ELEMENTWISE = _drop_path(
    "Drops single elements of the branch (ordinary dropout), not whole samples.", """\
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))
""")

_DROPPATH_IN_EVAL = _drop_path("Forgets `training`: drops branches at test time too.", """\
    if p == 0:
        return x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    keep = torch.rand(shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) * (0.0 if p == 1 else 1.0 / (1.0 - p))
""")


STUDENTS: dict[str, dict[str, str | None]] = {
    "dee_correct": {
        "spatial_dropout": _SPATIAL, "alpha_dropout": _ALPHA, "dropblock": _DROPBLOCK,
        "locked_dropout": _LOCKED, "DropConnectLinear": _DROPCONNECT,
        "attention_with_dropout": _ATTENTION, "mc_dropout_predict": _MC,
        "drop_path": _DROPPATH,
    },
    "eli_partial": {
        "spatial_dropout": _SPATIAL_ELEMENTWISE, "alpha_dropout": _ALPHA,
        "dropblock": _DROPBLOCK, "locked_dropout": _LOCKED, "DropConnectLinear": _DROPCONNECT,
        "attention_with_dropout": _ATTENTION, "mc_dropout_predict": _MC_TRAIN,
        "drop_path": _DROPPATH_ELEMENTWISE,
    },
    "fay_classic_bugs": {
        "spatial_dropout": _SPATIAL, "alpha_dropout": _ALPHA_ZERO, "dropblock": _DROPBLOCK,
        "locked_dropout": _LOCKED_PER_STEP, "DropConnectLinear": _DROPCONNECT_BIAS,
        "attention_with_dropout": _ATTENTION_OUTPUT, "mc_dropout_predict": _MC,
        "drop_path": _DROPPATH_IN_EVAL,
    },
}

#: Test cells each demo student fails (checked without nbgrader by tests/test_checks_ex03.py).
FAILED_CELLS: dict[str, set[str]] = {
    "dee_correct": set(),
    # element-wise instead of channel-wise; model.train() puts BatchNorm in training mode;
    # DropPath per element instead of per sample
    "eli_partial": {"test_spatial_visible", "test_spatial_hidden_statistics", "test_mc_visible",
                    "test_droppath_visible", "test_droppath_hidden_statistics"},
    # alpha: dropped units 0; locked: a mask per time step; DropConnect: bias dropped;
    # attention: dropout on the output; DropPath: active in eval mode
    "fay_classic_bugs": {
        "test_alpha_visible", "test_alpha_hidden_statistics", "test_locked_visible",
        "test_locked_hidden", "test_dropconnect_visible", "test_dropconnect_hidden",
        "test_attention_visible", "test_attention_hidden",
        "test_droppath_visible", "test_droppath_hidden_contract",
    },
}

#: Points each demo student must get, out of 28 (all automatic).
EXPECTED: dict[str, float] = {
    "dee_correct": 28.0,
    # loses spatial (1 + 2), the visible Monte Carlo test (1) and DropPath's structure (1 + 2)
    "eli_partial": 21.0,
    # loses alpha, locked, DropConnect and attention (3 each), DropPath's eval cells (1 + 1)
    "fay_classic_bugs": 14.0,
}
