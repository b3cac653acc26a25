"""Parity of safetune's formats layer with independent references (gguf-py, safetensors, torch).

usage: check_formats.py CASE TOOL WORKDIR [MODEL_DIR]
  quant        gguf-py writes every supported tensor type (gguf.quants.quantize for
               F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, random raw blocks with sane fp16 scales for
               Q4_K/Q5_K/Q6_K); our dequantisation must equal gguf.quants.dequantize bit for bit.
  model        every tensor of SmolLM2-135M-Instruct.Q4_1.gguf, same requirement (exit 77 if absent).
  gguf-writer  our writer re-writes a gguf-py file (all metadata types copied + typed setters,
               tensors as F32/F16/BF16); gguf-py reads it back: keys, values, tensors equal.
  st-writer    our safetensors writer (F32, BF16) read back by the Python safetensors package.
  st-reader    Python-written safetensors (single file, sharded index, folder) read by us exactly.
TOOL is the formats_tool executable (tests/parity/formats/formats_tool.c).
"""
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT


def read_dump(stream):
    """Parse formats_tool's dump stream: list of (name, float32 array)."""
    out = []
    while True:
        (l,) = struct.unpack("<I", stream.read(4))
        if l == 0xFFFFFFFF:
            return out
        name = stream.read(l).decode()
        (nd,) = struct.unpack("<I", stream.read(4))
        shape = struct.unpack("<%dq" % nd, stream.read(8 * nd))
        n = int(np.prod(shape)) if nd else 1
        out.append((name, np.frombuffer(stream.read(4 * n), dtype=np.float32).reshape(shape)))


def dump(tool, path):
    p = subprocess.run([tool, "dump", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("FAIL: formats_tool dump %s: %s" % (path, p.stderr.decode()))
    import io
    return read_dump(io.BytesIO(p.stdout))


def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def max_abs(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else 0.0


# ---------------------------------------------------------------- quant
def random_k_blocks(rng, qtype, n_blocks):
    """Random bytes for K-quant super-blocks, with the fp16 scales replaced by sane values."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    def f16(scale):
        return (rng.standard_normal(n_blocks) * scale).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype in (QT.Q4_K, QT.Q5_K):
        raw[:, 0:2] = f16(0.01)   # d
        raw[:, 2:4] = f16(0.005)  # dmin
    elif qtype == QT.Q6_K:
        raw[:, 208:210] = f16(0.01)
    return raw


def case_quant(tool, work):
    rng = np.random.default_rng(1234)
    path = os.path.join(work, "quant_types.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    expected = {}
    shapes = [(8, 256), (3, 2, 512), (2, 2, 2, 256)]
    for qtype in [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1]:
        for si, shape in enumerate(shapes):
            x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            x.reshape(-1)[:7] = [0.0, -0.0, 1e-8, -65504.0, 3.0, 1e-6, -2.5]  # edge values
            name = "t.%s.%d" % (qtype.name, si)
            if qtype == QT.F32:
                w.add_tensor(name, x)
                expected[name] = x
                continue
            if qtype == QT.F16:
                q = x.astype(np.float16)
                w.add_tensor(name, q)
                expected[name] = q.astype(np.float32)
                continue
            q = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
            expected[name] = gguf.quants.dequantize(q, qtype)
    for qtype in [QT.Q4_K, QT.Q5_K, QT.Q6_K]:
        for si, shape in enumerate(shapes):
            n_blocks = int(np.prod(shape)) // 256
            raw = random_k_blocks(rng, qtype, n_blocks).reshape(*shape[:-1], -1)
            name = "t.%s.%d" % (qtype.name, si)
            w.add_tensor(name, raw, raw_dtype=qtype)
            expected[name] = gguf.quants.dequantize(raw, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    got = dump(tool, path)
    assert [n for n, _ in got] == list(expected), "tensor order/names differ"
    bad = 0
    for name, ours in got:
        ref = expected[name].astype(np.float32)
        ok = same_bits(ours, ref)
        bad += not ok
        print("%-12s %-16s %s max|diff| %.3g" % (name, str(ours.shape), "OK " if ok else "MISMATCH", max_abs(ours, ref)))
    print("quant: %d tensors, %d mismatching" % (len(got), bad))
    return bad == 0


# ---------------------------------------------------------------- model
def case_model(tool, work, model_dir):
    path = os.path.join(model_dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        print("SKIP: %s not found" % path)
        sys.exit(77)
    t0 = time.time()
    r = gguf.GGUFReader(path)
    p = subprocess.Popen([tool, "dump", path], stdout=subprocess.PIPE)
    worst, nbad, nel, types = 0.0, 0, 0, {}
    for t in r.tensors:
        (l,) = struct.unpack("<I", p.stdout.read(4))
        name = p.stdout.read(l).decode()
        (nd,) = struct.unpack("<I", p.stdout.read(4))
        shape = struct.unpack("<%dq" % nd, p.stdout.read(8 * nd))
        ours = np.frombuffer(p.stdout.read(4 * int(np.prod(shape))), dtype=np.float32).reshape(shape)
        ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        assert name == t.name, (name, t.name)
        if not same_bits(ours, ref):
            nbad += 1
            print("MISMATCH %s (%s)" % (name, t.tensor_type.name))
        worst = max(worst, max_abs(ours, ref))
        nel += ours.size
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    rc = p.wait()
    print("model: %d tensors %s, %d elements, %d mismatching, max |ours - gguf-py| = %g (%.1f s)"
          % (len(r.tensors), types, nel, nbad, worst, time.time() - t0))
    return rc == 0 and nbad == 0 and worst == 0.0


# ---------------------------------------------------------------- gguf writer
def kv_bytes(field):
    """Serialized bytes of a key/value (key, type, value) as gguf-py parsed them."""
    return b"".join(np.asarray(p).tobytes() for p in field.parts)


def case_gguf_writer(tool, work):
    rng = np.random.default_rng(7)
    src = os.path.join(work, "writer_src.gguf")
    out = os.path.join(work, "writer_out.gguf")
    w = gguf.GGUFWriter(src, "llama")
    w.add_uint8("m.u8", 200)
    w.add_int8("m.i8", -100)
    w.add_uint16("m.u16", 60000)
    w.add_int16("m.i16", -32000)
    w.add_uint32("m.u32", 4000000000)
    w.add_int32("m.i32", -2000000000)
    w.add_float32("m.f32", 3.25)
    w.add_uint64("m.u64", 2**63 + 5)
    w.add_int64("m.i64", -(2**40))
    w.add_float64("m.f64", 1.0 / 3.0)
    w.add_bool("m.bool", True)
    w.add_string("m.str", "héllo wörld")
    w.add_string("m.empty", "")
    w.add_array("m.arr_i32", [1, -2, 3])
    w.add_array("m.arr_f32", [0.5, -1.5])
    w.add_array("m.arr_str", ["a", "", "ü"])
    w.add_array("m.arr_bool", [True, False])
    w.add_key_value("m.arr_u16", [1, 65535], VT.ARRAY, sub_type=VT.UINT16)
    w.add_key_value("m.arr_f64", [1e300, -2.5], VT.ARRAY, sub_type=VT.FLOAT64)
    w.add_array("m.arr_nested", [[1, 2], [3, 4, 5]])
    w.add_array("m.arr_nested_str", [["x", "y"], ["z"]])
    tensors = {
        "a.f32": rng.standard_normal((4, 6)).astype(np.float32),
        "b.f16": (rng.standard_normal((2, 3, 5)) * 1000).astype(np.float32),
        "c.bf16": rng.standard_normal((7,)).astype(np.float32),
        "d.f32": rng.standard_normal((2, 1, 3, 2)).astype(np.float32),
        "e.f16": np.array([1e-7, 65519.0, 65520.0, -70000.0, 1 + 2**-11, 2**-25, 3 * 2**-26, 0.1], np.float32),
    }
    for n, x in tensors.items():
        w.add_tensor(n, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    p = subprocess.run([tool, "gguf-rewrite", src, out], stderr=subprocess.PIPE)
    if p.returncode != 0:
        print("FAIL: gguf-rewrite: %s" % p.stderr.decode())
        return False
    rs, ro = gguf.GGUFReader(src), gguf.GGUFReader(out)
    ok = True
    vo = ro.fields["GGUF.version"].contents()
    if vo != 3:
        print("version %s != 3" % vo)
        ok = False
    n_keys = 0
    for k, f in rs.fields.items():
        if k.startswith("GGUF.") or k == "general.alignment":
            continue
        n_keys += 1
        g = ro.fields.get(k)
        if g is None or g.types != f.types or kv_bytes(g) != kv_bytes(f):
            print("key %s differs: %s vs %s" % (k, f.types, g.types if g else None))
            ok = False
    want = {
        "safetune.test.u32": ([VT.UINT32], 4000000000),
        "safetune.test.i32": ([VT.INT32], -123456),
        "safetune.test.f32": ([VT.FLOAT32], float(np.float32(0.1))),
        "safetune.test.bool": ([VT.BOOL], True),
        "safetune.test.str": ([VT.STRING], "héllo"),
        "safetune.test.arr_i32": ([VT.ARRAY, VT.INT32], [-1, 0, 2147483647]),
        "safetune.test.arr_str": ([VT.ARRAY, VT.STRING], ["alpha", "", "gamma γ"]),
    }
    for k, (types, val) in want.items():
        g = ro.fields.get(k)
        if g is None or g.types != types or g.contents() != val:
            print("key %s: got %s %s, want %s %s" % (k, g.types if g else None, g.contents() if g else None, types, val))
            ok = False
    # spot-check decoded values of a few copied keys against what gguf-py was given
    if ro.fields["m.u64"].contents() != 2**63 + 5 or ro.fields["m.arr_str"].contents() != ["a", "", "ü"]:
        print("copied values differ")
        ok = False
    n_t = 0
    for t in ro.tensors:
        x = tensors[t.name]
        if t.data_offset % 32:
            print("tensor %s misaligned at %d" % (t.name, t.data_offset))
            ok = False
        if t.name.endswith(".f16"):
            with np.errstate(over="ignore"):
                wt, ref = QT.F16, x.astype(np.float16).astype(np.float32)
        elif t.name.endswith(".bf16"):
            wt, ref = QT.BF16, gguf.quants.dequantize(gguf.quants.quantize(x, QT.BF16), QT.BF16)
        else:
            wt, ref = QT.F32, x
        ours = gguf.quants.dequantize(t.data, t.tensor_type)
        good = t.tensor_type == wt and same_bits(ours.reshape(x.shape), ref)
        n_t += 1
        if not good:
            print("tensor %s (%s) differs, max|diff| %g" % (t.name, t.tensor_type.name, max_abs(ours.reshape(x.shape), ref)))
            ok = False
    if n_t != len(tensors):
        print("tensor count %d != %d" % (n_t, len(tensors)))
        ok = False
    print("gguf-writer: %d copied keys + %d typed keys, %d tensors (F32/F16/BF16): %s"
          % (n_keys, len(want), n_t, "all equal" if ok else "DIFFERENCES"))
    return ok


# ---------------------------------------------------------------- safetensors
def case_st_writer(tool, work):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(os.cpu_count())
    g = torch.Generator().manual_seed(3)
    src_t = {
        "model.embed_tokens.weight": torch.randn(17, 8, generator=g),
        "model.norm.weight": torch.randn(8, generator=g),
        "lm_head.weight": torch.randn(3, 4, 5, generator=g) * 1e4,
        "h.half": torch.randn(6, generator=g).to(torch.float16),
        "h.bf": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(1.5),
    }
    src = os.path.join(work, "st_src.safetensors")
    save_file(src_t, src)
    ok = True
    for dt, tdt in (("F32", torch.float32), ("BF16", torch.bfloat16)):
        out = os.path.join(work, "st_out_%s.safetensors" % dt)
        p = subprocess.run([tool, "st-rewrite", src, out, dt], stderr=subprocess.PIPE)
        if p.returncode != 0:
            print("FAIL: st-rewrite: %s" % p.stderr.decode())
            return False
        back = load_file(out)
        with safe_open(out, "pt") as f:
            if f.metadata() != {"format": "pt"}:
                print("metadata %s" % f.metadata())
                ok = False
        with open(out, "rb") as fh:
            (hl,) = struct.unpack("<Q", fh.read(8))
        if hl % 8:
            print("header length %d not a multiple of 8" % hl)
            ok = False
        if set(back) != set(src_t):
            print("names differ: %s" % sorted(back))
            ok = False
        for n, x in src_t.items():
            ref = x.float().to(tdt)
            y = back.get(n)
            if y is None or y.dtype != tdt or tuple(y.shape) != tuple(x.shape) or not torch.equal(
                    y.view(torch.int16 if tdt == torch.bfloat16 else torch.int32),
                    ref.view(torch.int16 if tdt == torch.bfloat16 else torch.int32)):
                print("%s %s differs" % (dt, n))
                ok = False
        print("st-writer %s: %d tensors read back by safetensors: %s" % (dt, len(back), "equal" if ok else "DIFFERENT"))
    return ok


def case_st_reader(tool, work):
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(os.cpu_count())
    g = torch.Generator().manual_seed(5)
    t = {
        "a": torch.randn(5, 7, generator=g),
        "b": torch.randn(3, generator=g).to(torch.float16),
        "c": torch.randn(2, 2, 3, generator=g).to(torch.bfloat16),
        "d": torch.tensor(-0.75),
        "e": torch.zeros(0, 4),
        "f": torch.randn(4, 4, generator=g),
    }
    single = os.path.join(work, "st_single")
    sharded = os.path.join(work, "st_sharded")
    for d in (single, sharded):
        os.makedirs(d, exist_ok=True)
        for fn in os.listdir(d):
            os.unlink(os.path.join(d, fn))
    save_file(t, os.path.join(single, "model.safetensors"))
    parts = [["a", "b", "e"], ["c", "d", "f"]]
    wm = {}
    for i, names in enumerate(parts):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(parts))
        save_file({n: t[n] for n in names}, os.path.join(sharded, fn))
        wm.update({n: fn for n in names})
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, fh)
    ok = True
    for path in (os.path.join(single, "model.safetensors"), single,
                 os.path.join(sharded, "model.safetensors.index.json"), sharded):
        got = dict(dump(tool, path))
        good = set(got) == set(t)
        for n, x in t.items():
            good = good and n in got and same_bits(got[n], x.float().numpy())
        print("st-reader %-60s %d tensors: %s" % (os.path.relpath(path, work), len(got), "exact" if good else "DIFFERENT"))
        ok = ok and good
    return ok


def main():
    case, tool, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    if case == "quant":
        ok = case_quant(tool, work)
    elif case == "model":
        ok = case_model(tool, work, sys.argv[4])
    elif case == "gguf-writer":
        ok = case_gguf_writer(tool, work)
    elif case == "st-writer":
        ok = case_st_writer(tool, work)
    elif case == "st-reader":
        ok = case_st_reader(tool, work)
    else:
        sys.exit("unknown case " + case)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
