"""Lesson 08 by hand: NF4, FP4 and int8 quantisation in plain torch, LoRA on the dequantised weight, all checked
against bitsandbytes (the codes) and peft (the logits) on the model train.py builds.

python 08-chatbot_qlora/from_scratch.py --model_name_or_path models/mini-bloom-zh     # NF4 + double quantisation
python 08-chatbot_qlora/from_scratch.py --model_name_or_path models/mini-bloom-zh --quantization int8
"""

import sys
from pathlib import Path

import torch
from torch import nn

LESSON_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LESSON_DIR.parent))  # `common`, for the comparison half and lesson 05's LoRA

BLOCK = 64  # weights per absmax scale (QLoRA, bitsandbytes' default)
BLOCK2 = 256  # absmax scales per second-level scale (double quantisation)
BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # the block sizes bitsandbytes' 4-bit kernels take
GRID = 2**16  # bitsandbytes' CPU lookup grid for 8-bit codes (see blockwise); 0 = the exact nearest level


# ---------------------------------------------------------------- the data types (16 or 256 levels)
def nf4_levels() -> torch.Tensor:
    """NormalFloat4 (Dettmers et al. 2023, arXiv:2305.14314, section 3): levels at quantiles of N(0, 1), so each
    level covers an equal share of normally distributed weights, scaled to [-1, 1].

    A symmetric k-bit quantile type has no exact 0. QLoRA takes 2^(k-1) quantiles for the negative half and
    2^(k-1) + 1 for the positive half, both ending at 0, and joins them: 7 negative, 0, 8 positive = 16 levels.
    The outermost quantile is not at probability 1 (infinite) but at delta = 1 - (1/(2*15) + 1/(2*16)) / 2,
    halfway between the edges 15 and 16 equal bins would put there. bitsandbytes rounds delta to 7 decimals
    (0.9677083); so does this, and the 16 levels then equal its table bit for bit."""
    delta = round(1 - (1 / 30 + 1 / 32) / 2, 7)  # 0.9677083
    positive = torch.special.ndtri(torch.linspace(delta, 0.5, 9)[:-1].double())  # 8 quantiles, 0.5 left out
    negative = -torch.special.ndtri(torch.linspace(delta, 0.5, 8)[:-1].double())  # 7
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


def fp4_code_values() -> torch.Tensor:
    """bitsandbytes' FP4: 1 sign bit, 2 exponent bits, 1 mantissa bit; the value of each 4-bit code 0..15 (code
    order, not sorted), scaled to [-1, 1]. Exponent field e > 0: (1 + m/2) * 2^(4-e); e = 0: m * 2^-4."""
    values = []
    for code in range(16):
        sign, e, m = code >> 3, (code >> 1) & 3, code & 1
        value = (1 + m / 2) * 2.0 ** (4 - e) if e else m * 2.0**-4
        values.append(-value if sign else value)
    values = torch.tensor(values)
    return values / values.abs().max()


def dynamic_map() -> torch.Tensor:
    """The 8-bit "dynamic" type the absmax scales are stored in (Dettmers 2015, arXiv:1511.04561): a decade
    10^-6 .. 10^0 picked by the exponent, then 2^i evenly spaced means inside it; signed; 256 sorted levels."""
    data = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist() + (-(10 ** (-6 + i)) * means).tolist()
    return torch.tensor(sorted(data + [0.0, 1.0]), dtype=torch.float32)


# ---------------------------------------------------------------- blockwise absmax quantisation
def check_block(blocksize: int) -> None:
    """Any weight shape fits any block size: the last block may be short (it gets its own absmax)."""
    from common.errors import UserError

    if blocksize not in BLOCKS:
        raise UserError(f"block size {blocksize}: bitsandbytes' 4-bit kernels take {', '.join(map(str, BLOCKS))}")


def blockwise(
    x: torch.Tensor, levels: torch.Tensor, blocksize: int, grid: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """x flattened into blocks (the last one may be short); each block divided by its absmax, then each value
    rounded to the nearest level. Returns (index of the level, one uint8 per value; absmax per block, fp32).

    grid > 0: the value is first rounded to the nearest of `grid` evenly spaced points in [-1, 1], and the level
    nearest that point is taken (a lookup table). bitsandbytes 0.50.2's CPU kernel for 8-bit codes does this with
    65,536 points; a value within half a grid step of the midpoint of two levels can then get the farther one
    (30 of the mini model's 12,288 double-quantised scales)."""
    flat = x.reshape(-1).float()
    blocks = list(flat.split(blocksize))
    absmax = torch.stack([b.abs().max() for b in blocks])
    scaled = torch.cat([torch.clamp(b * (1.0 / a.clamp(min=1e-38)), -1, 1) for b, a in zip(blocks, absmax)])
    midpoints = (levels[:-1] + levels[1:]) / 2  # nearest level = how many midpoints lie below
    if grid:
        points = torch.arange(grid, dtype=torch.float32) / (grid - 1) * 2 - 1
        table = torch.bucketize(points, midpoints, out_int32=True)
        return table[torch.trunc((scaled + 1) * 0.5 * (grid - 1) + 0.5).long()].to(torch.uint8), absmax
    return torch.bucketize(scaled, midpoints, out_int32=True).to(torch.uint8), absmax


def unblock(indices: torch.Tensor, levels: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    values = levels[indices.long()]
    return torch.cat([b * a for b, a in zip(values.split(blocksize), absmax)])


def quantize_4bit(
    w: torch.Tensor, quant_type: str = "nf4", blocksize: int = BLOCK, double_quant: bool = True, grid: int = GRID
) -> dict:
    """W as 4-bit codes, two per byte (the first value in the high nibble), plus its scales.

    double_quant: the fp32 absmax scales (32 bits per 64 weights = 0.5 bit per weight) are centred on their mean
    and stored as 8-bit dynamic codes in blocks of 256, each block with one fp32 scale: 8/64 + 32/(64*256) =
    0.127 bit per weight."""
    check_block(blocksize)
    if quant_type == "nf4":
        sorted_levels, to_code = nf4_levels(), torch.arange(16)
    else:
        code_values = fp4_code_values()
        sorted_levels, to_code = code_values.sort()  # FP4 codes are bit patterns: sorted index -> code
    index, absmax = blockwise(w, sorted_levels, blocksize)
    codes = to_code[index.long()].to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    state = {"packed": ((codes[0::2] << 4) | codes[1::2]).unsqueeze(1), "shape": torch.tensor(w.shape)}
    if double_quant:
        offset = absmax.mean()
        state["absmax_codes"], state["absmax2"] = blockwise(absmax - offset, dynamic_map(), BLOCK2, grid)
        state["offset"] = offset
    else:
        state["absmax"] = absmax
    return state


def dequantize_4bit(state: dict, quant_type: str = "nf4", blocksize: int = BLOCK) -> torch.Tensor:
    """codes -> levels, times each block's absmax (itself dequantised first, with double quantisation)."""
    if "absmax" in state:
        absmax = state["absmax"]
    else:
        absmax = unblock(state["absmax_codes"], dynamic_map(), state["absmax2"], BLOCK2) + state["offset"]
    packed = state["packed"].reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    shape = tuple(state["shape"].tolist())
    code_values = nf4_levels() if quant_type == "nf4" else fp4_code_values()
    n = int(torch.tensor(shape).prod())
    return unblock(codes[:n], code_values, absmax, blocksize).reshape(shape)


def quantize_int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM.int8 (Dettmers et al. 2022, arXiv:2208.07339) weight side: each row (output feature) scaled by its
    own absmax to [-127, 127] and rounded, after a cast to fp16. Returns (int8 rows, absmax per row, fp32)."""
    w16 = w.to(torch.float16)
    absmax = w16.abs().max(dim=1).values.float()
    return torch.round(w16 * (127.0 / absmax.unsqueeze(1))).to(torch.int8), absmax


# ---------------------------------------------------------------- the quantised layers
class Linear4bitByHand(nn.Module):
    """A frozen Linear stored as 4-bit codes; each forward dequantises W to the compute dtype
    (bitsandbytes 0.50.2, nn/modules.py Linear4bit.forward and backends/default/ops.py gemm_4bit)."""

    def __init__(self, linear: nn.Linear, quant_type: str, double_quant: bool, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.quant_type, self.compute_dtype = quant_type, compute_dtype
        self.state = quantize_4bit(linear.weight.data, quant_type, BLOCK, double_quant)
        self.bias = linear.bias  # stays full precision, frozen

    def dequantized(self) -> torch.Tensor:
        return dequantize_4bit(self.state, self.quant_type, BLOCK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, x = x.dtype, x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return nn.functional.linear(x, self.dequantized().to(x.dtype), bias).to(dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.quant_type}, blocks of {BLOCK}"


class Linear8bitByHand(nn.Module):
    """A frozen Linear stored as int8 rows (bitsandbytes 0.50.2 on a CPU: autograd/_functions.py). Training:
    W dequantised, an fp32 matmul (MatMul8bitFp). Inference: the input rows are quantised to int8 too, except
    the columns holding an outlier (|x| >= 6.0), which stay in full precision (LLM.int8, MatMul8bitLt)."""

    THRESHOLD = 6.0

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.int8, self.absmax = quantize_int8_rows(linear.weight.data)
        self.bias = linear.bias

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.int8.to(dtype).mul_(self.absmax.unsqueeze(1).mul(1.0 / 127.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return nn.functional.linear(x, self.dequantized(x.dtype), self.bias)
        out = self.int8_matmul(x.detach())  # rounding has no useful gradient
        if x.requires_grad:  # the gradient bitsandbytes gives x here: that of x @ dequantized W (value unchanged)
            exact = nn.functional.linear(x, self.dequantized(x.dtype))
            out = out + (exact - exact.detach())
        return out

    def int8_matmul(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, x.shape[-1])
        a16 = a.to(torch.float16)
        outliers = a16.abs() >= self.THRESHOLD
        columns = torch.argwhere(outliers.any(dim=0)).view(-1)
        a16 = a16.masked_fill(outliers, 0)
        a_absmax = a16.abs().max(dim=1).values.float()
        a8 = torch.round(a16 * (127.0 / a_absmax.unsqueeze(-1))).to(torch.int8)
        if a8.shape[0] > 1:
            a8[:, columns] = 0
        products = torch.matmul(a8.float(), self.int8.float().t()).to(torch.int32)  # int8 x int8, summed exactly
        out = products * (a_absmax.unsqueeze(-1) * self.absmax.unsqueeze(0)) * 6.200124e-05  # 1 / 127^2
        out = (out if self.bias is None else out + self.bias).to(x.dtype)
        if columns.numel():  # the outlier columns: full-precision input times the dequantised weight columns
            w_columns = (self.int8[:, columns] * self.absmax.view(-1, 1) * 7.874015718698502e-3).to(x.dtype)
            out = out.addmm(a[:, columns], w_columns.t())
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_model(model: nn.Module, quantization: str, double_quant: bool, compute_dtype: torch.dtype) -> None:
    """Every Linear but the output layer (and LoRA's own A and B) replaced by its quantised version, as
    transformers' bitsandbytes integration picks them."""
    output = model.get_output_embeddings()
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module is not output and ".lora_" not in f".{name}":
            new = (Linear8bitByHand(module) if quantization == "int8"
                   else Linear4bitByHand(module, quantization, double_quant, compute_dtype))  # fmt: skip
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)


def by_hand(model: nn.Module, args, tokenizer=None) -> nn.Module:
    """Lesson 05's hand-made LoRA, then the frozen weights quantised: LoRA's branch sees x, the base layer
    computes with dequant(W_q) instead of W."""
    from common.lessons import lesson_module

    model = lesson_module("05", "from_scratch").by_hand(model, args, tokenizer)
    if next(model.parameters()).device.type != "meta":  # on the meta device (counting only) there are no values
        quantize_model(model, args.quantization, args.double_quant, getattr(torch, args.compute_dtype or "float32"))
    return model


# ---------------------------------------------------------------- the same values, compared with bitsandbytes and peft
def copy_values(hand: nn.Module, reference) -> None:
    # B = 0 would hide the LoRA branch: move A and B as training would; only they are copied (the quantised
    # weights were made independently, from the same full-precision file, and are compared in main())
    from common.check_by_hand import trainable_by_plain_name

    ours = trainable_by_plain_name(hand)
    for name, p in trainable_by_plain_name(reference).items():
        p.data += 0.1 * torch.randn_like(p)
        ours[name].data.copy_(p.data)


def compare_with_bitsandbytes(hand: nn.Module, reference) -> dict:
    """Per quantised layer: are the stored codes and scales bit for bit bitsandbytes', and the dequantised W?"""
    import bitsandbytes.functional as bnbf

    theirs = dict(reference.base_model.model.named_modules())
    rows = {}
    for name, module in hand.named_modules():
        if not isinstance(module, (Linear4bitByHand, Linear8bitByHand)):
            continue
        bnb = theirs[name]
        bnb = getattr(bnb, "base_layer", bnb)
        if isinstance(module, Linear8bitByHand):
            scb = bnb.weight.SCB if bnb.weight.SCB is not None else bnb.state.SCB  # moved there after a forward
            codes = torch.equal(module.int8, bnb.weight.data) and torch.equal(module.absmax, scb)
            dequantized = bnb.weight.data.float().mul_(scb.unsqueeze(1).mul(1.0 / 127.0))
        else:
            qs = bnb.weight.quant_state
            scales = ((module.state["absmax_codes"], module.state["absmax2"], module.state["offset"])
                      if qs.nested else (module.state["absmax"],))  # fmt: skip
            theirs_scales = (qs.absmax, qs.state2.absmax, qs.offset) if qs.nested else (qs.absmax,)
            codes = torch.equal(module.state["packed"], bnb.weight.data) and all(
                torch.equal(a.reshape(-1), b.reshape(-1)) for a, b in zip(scales, theirs_scales)
            )
            dequantized = bnbf.dequantize_4bit(bnb.weight.data, qs).float()
        rows[name] = (codes, (module.dequantized() - dequantized).abs().max().item())
    return rows


def main(argv=None) -> int:
    from common.check_by_hand import check, parse_args, report

    args = parse_args(LESSON_DIR, argv, __doc__)
    from common.lessons import lesson_module

    lesson_module(LESSON_DIR.name, "quantize").require_bitsandbytes()  # one line saying how to install it
    result = check(LESSON_DIR, by_hand, copy_values, args)
    layers = compare_with_bitsandbytes(result.hand, result.reference)
    same = sum(codes for codes, _ in layers.values())
    worst = max(diff for _, diff in layers.values())
    notes = [f"quantised layers: {len(layers)}; stored codes and scales bit for bit bitsandbytes': {same} of "
             f"{len(layers)}; dequantised weights max |difference|: {worst:.3g}"]  # fmt: skip
    if args.quantization == "nf4":
        from bitsandbytes.functional import get_4bit_type

        table = get_4bit_type("nf4", device="cpu")
        notes.append(f"NF4 levels derived here vs bitsandbytes' table: max |difference| "
                     f"{(nf4_levels() - table).abs().max().item():.3g}")  # fmt: skip
    shown = next(m for m in result.hand.modules() if isinstance(m, (Linear4bitByHand, Linear8bitByHand)))
    status = report(result, shown, notes)
    return status if same == len(layers) and worst == 0 else 1


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(lambda argv: sys.exit(main(argv)))
