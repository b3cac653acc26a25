#!/usr/bin/env python3
"""Generate the fuzz seeds (tests/fuzz/corpus/<target>/) and dictionaries (tests/fuzz/dict/).

Seeds are small inputs made here, in the shape of the real files the project reads: GGUFs written
with gguf-py (every metadata type, every tensor type the reader dequantises; tokenizer metadata cut
from SmolLM2's GGUF to a few hundred tokens), tokenizer.json files cut from the Qwen2.5 and
Mistral-7B ones (same normalizer/pre-tokenizer/decoder/post-processor, a few hundred tokens),
the real chat templates, a few rows of each dataset and prompt file (each seed < 8 KB), and
hand-written requests, configs and judge replies. Dictionaries are the string literals of the
parsing sources plus format tokens. Run from the repository root with the venv python:
    .venv/bin/python tests/fuzz/make_seeds.py
Needs models/ and data/ (scripts/fetch_model.sh, scripts/fetch_data.py). Deterministic.
"""
import json
import os
import re
import shutil
import struct
import sys

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "tests", "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
DICT = os.path.join(FUZZ, "dict")
DATA = os.environ.get("SAFETUNE_DATA_DIR") or os.path.join(ROOT, "data")
MODELS = os.environ.get("SAFETUNE_MODEL_DIR") or os.path.join(ROOT, "models")
SMOL = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
rng = np.random.default_rng(1234)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    assert len(data) <= 64 * 1024, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gguf_bytes(build):
    """Write a GGUF with gguf-py to a temp file and return its bytes."""
    tmp = os.path.join(FUZZ, ".tmp.gguf")
    w = gguf.GGUFWriter(tmp, "llama")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(tmp, "rb") as f:
        b = f.read()
    os.remove(tmp)
    return b


# ---------------------------------------------------------------- GGUF (metadata, tensors)
QT = gguf.GGMLQuantizationType


def all_types(w):
    w.add_uint8("t.u8", 200); w.add_int8("t.i8", -5); w.add_uint16("t.u16", 60000); w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4000000000); w.add_int32("t.i32", -7); w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True); w.add_string("t.str", "héllo"); w.add_uint64("t.u64", 2**63)
    w.add_int64("t.i64", -2**40); w.add_float64("t.f64", 2.25)
    w.add_array("t.arr_i32", [1, 2, 3]); w.add_array("t.arr_str", ["a", "bc", ""])
    w.add_array("t.arr_f32", [0.5, -1.0]); w.add_array("t.arr_arr", [[1, 2], [3]])
    w.add_uint32("general.alignment", 64)
    w.data_alignment = 64
    w.add_tensor("f32", rng.standard_normal((2, 8), dtype=np.float32))
    w.add_tensor("f16", rng.standard_normal((3, 4)).astype(np.float16))


def quant_tensors(w):
    w.add_uint32("llama.context_length", 64)
    # raw blocks of each quantised type the reader dequantises (random bytes, scales made finite)
    for qt in (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.BF16):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        n = bs * 2
        raw = rng.integers(0, 256, size=(1, (n // bs) * ts), dtype=np.uint8)
        raw[0, 1::2] &= 0x3B  # keep fp16 scale exponents small (finite)
        w.add_tensor("q." + qt.name.lower(), raw, raw_dtype=qt)  # byte shape -> (1, n) elements


def model_like(w):
    w.add_name("tiny"); w.add_context_length(32); w.add_embedding_length(8); w.add_block_count(1)
    w.add_feed_forward_length(16); w.add_head_count(2); w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0); w.add_vocab_size(16)
    for name, shape in (("token_embd.weight", (16, 8)), ("blk.0.attn_norm.weight", (8,)),
                        ("blk.0.attn_q.weight", (8, 8)), ("output_norm.weight", (8,))):
        w.add_tensor(name, rng.standard_normal(shape, dtype=np.float32))


def make_gguf():
    put("gguf", "all_types.gguf", gguf_bytes(all_types))
    put("gguf", "quant_types.gguf", gguf_bytes(quant_tensors))
    b = gguf_bytes(model_like)
    put("gguf", "model_like.gguf", b)
    put("gguf", "model_like_v2.gguf", b[:4] + struct.pack("<I", 2) + b[8:])
    put("gguf", "empty.gguf", gguf_bytes(lambda w: None))


# ---------------------------------------------------------------- tokenizer metadata in GGUF
def smol_reader():
    return gguf.GGUFReader(SMOL)


def field_value(r, key):
    f = r.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


def cut_bpe(tokens, merges, n_keep):
    """First n_keep tokens (plus every special token after them is dropped), and the merges whose
    parts and result are all kept."""
    keep = tokens[:n_keep]
    s = set(keep)
    kept_merges = []
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in s and b in s and (a + b) in s:
            kept_merges.append(m)
    return keep, kept_merges


def make_tokenizer_gguf():
    r = smol_reader()
    tokens = field_value(r, "tokenizer.ggml.tokens")
    merges = field_value(r, "tokenizer.ggml.merges")
    ttype = field_value(r, "tokenizer.ggml.token_type")
    tmpl = field_value(r, "tokenizer.chat_template")
    n = 400
    keep, km = cut_bpe(tokens, merges, n)

    def gpt2(w):
        w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre(field_value(r, "tokenizer.ggml.pre"))
        w.add_token_list(keep); w.add_token_types(ttype[:n]); w.add_token_merges(km)
        w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_pad_token_id(2)
        w.add_chat_template(tmpl)
    put("tokenizer_gguf", "smollm2_cut.gguf", gguf_bytes(gpt2))

    # SentencePiece-style ("llama") vocabulary from Mistral's tokenizer.json: tokens, scores, types
    tj = json.load(open(os.path.join(DATA, "tokenizers", "mistral-7b", "tokenizer.json"), encoding="utf-8"))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])[:400]
    toks = [t for t, _ in vocab]
    types = [3 if i < 3 else (6 if t.startswith("<0x") else 1) for i, t in enumerate(toks)]
    scores = [-float(i) for i in range(len(toks))]

    def llama(w):
        w.add_tokenizer_model("llama"); w.add_token_list(toks); w.add_token_scores(scores)
        w.add_token_types(types); w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_add_bos_token(True)
    put("tokenizer_gguf", "mistral_cut.gguf", gguf_bytes(llama))


# ---------------------------------------------------------------- tokenizer.json
def cut_tokenizer_json(src, n_keep):
    tj = json.load(open(src, encoding="utf-8"))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])[:n_keep]
    keep = dict(vocab)
    s = set(keep)
    merges = []
    for m in tj["model"].get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in s and b in s and (a + b) in s:
            merges.append(m)
    tj["model"]["vocab"] = keep
    tj["model"]["merges"] = merges
    base = len(keep)
    added = []
    for i, t in enumerate(tj.get("added_tokens", [])[:4]):
        t = dict(t)
        t["id"] = t["id"] if t["id"] < base else base + i
        added.append(t)
    tj["added_tokens"] = added
    pp = tj.get("post_processor")
    if pp and pp.get("special_tokens"):  # TemplateProcessing ids must exist in the cut vocabulary
        for v in pp["special_tokens"].values():
            v["ids"] = [x if x < base + len(added) else 1 for x in v["ids"]]
    return json.dumps(tj, ensure_ascii=False, separators=(",", ":"))


def make_tokenizer_json():
    put("tokenizer_json", "qwen2.5_cut.json",
        cut_tokenizer_json(os.path.join(DATA, "tokenizers", "qwen2.5", "tokenizer.json"), 300))
    put("tokenizer_json", "mistral_cut.json",
        cut_tokenizer_json(os.path.join(DATA, "tokenizers", "mistral-7b", "tokenizer.json"), 300))


# ---------------------------------------------------------------- round trip, chat templates
TEXTS = ["Hello, world!", "  leading and trailing  ", "ünïcödé — 日本語 😀", "<|im_end|><s></s>[INST]",
         "tabs\tand\nnewlines\r\n", "12345 678.9", "'s 're 've don't", "\xff\xfe not utf-8"]


def make_roundtrip():
    for i, t in enumerate(TEXTS):
        raw = t.encode("utf-8") if not t.startswith("\xff") else b"\xff\xfe not utf-8 \xc3"
        for mode in (0, 1, 2, 8, 9, 10):
            put("tokenizer_roundtrip", "text%d_m%d" % (i, mode), bytes([mode]) + raw)
    for mode in (4, 5, 6):
        put("tokenizer_roundtrip", "ids_m%d" % mode,
            bytes([mode]) + struct.pack("<8i", 0, 1, 2, 100, 1000, 49151, -1, 2**31 - 1))


LLAMA2_TEMPLATE = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
                   "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
                   "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
                   "{% if loop.index0 == 0 and system_message != false %}"
                   "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
                   "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
                   "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                   "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
                   "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                   "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
                   "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def make_chat():
    r = smol_reader()
    templates = {"smollm2": field_value(r, "tokenizer.chat_template"), "llama2": LLAMA2_TEMPLATE,
                 "llama3": LLAMA3_TEMPLATE}
    for name in ("qwen2.5", "mistral-7b"):
        tc = json.load(open(os.path.join(DATA, "tokenizers", name, "tokenizer_config.json"), encoding="utf-8"))
        if isinstance(tc.get("chat_template"), str):
            templates[name] = tc["chat_template"]
    for name, t in templates.items():
        put("chat_template", "detect_" + name, b"\x00" + t.encode("utf-8")[:8000])
    convs = [b"sBe brief.\x00uHello\x00aHi there.", b"uWhat is 2+2?\x00a4\x00uThanks",
             b"u<|im_end|> [INST] <|eot_id|>\x00a\xff\xfe", b"xunknown role\x00u", b""]
    for mode in range(1, 64, 6):
        for i, c in enumerate(convs):
            put("chat_template", "render_m%d_%d" % (mode, i), bytes([mode | 1]) + c)


# ---------------------------------------------------------------- datasets and prompt files
def head_lines(path, n):
    with open(path, encoding="utf-8") as f:
        return "".join(f.readline() for _ in range(n))


def make_dataset():
    alp = json.load(open(os.path.join(DATA, "alpaca", "alpaca_5000.json"), encoding="utf-8"))[:3]
    put("dataset", "alpaca", b"\x09" + json.dumps(alp, ensure_ascii=False, indent=1).encode())
    put("dataset", "alpaca_auto", b"\x08" + json.dumps(alp[:2], ensure_ascii=False).encode())
    put("dataset", "dolly", b"\x02" + head_lines(os.path.join(DATA, "dolly", "databricks-dolly-15k.prefix.jsonl"), 2).encode())
    orca = [l for l in head_lines(os.path.join(DATA, "orca", "validation.jsonl"), 40).splitlines(True)
            if len(l.encode()) < 3000][:2]
    put("dataset", "orca", b"\x03" + "".join(orca).encode())
    put("dataset", "orca_auto", b"\x00" + orca[0].encode())
    msgs = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    put("dataset", "messages", b"\x04" + "\n".join(json.dumps(m) for m in msgs).encode() + b"\n")
    share = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    put("dataset", "sharegpt", b"\x03" + json.dumps(share).encode() + b"\n")
    put("dataset", "bom_blank", b"\x01\xef\xbb\xbf\n" + json.dumps(alp[0]).encode() + b"\n\n")


def make_prompts():
    adv = head_lines(os.path.join(DATA, "advbench", "harmful_behaviors.csv"), 4)
    put("prompts", "csv_advbench", b"\x00" + adv.encode())
    put("prompts", "advbench", b"\x02" + adv.encode())
    xs = head_lines(os.path.join(DATA, "xstest", "xstest_prompts.csv"), 4)
    put("prompts", "xstest", b"\x03" + xs.encode())
    put("prompts", "csv_quoted", b"\x00id,prompt,category,label\n1,\"a, \"\"quoted\"\" prompt\",x,safe\n2,plain,,unsafe\n")
    jl = [{"prompt": "How do I bake bread?", "id": 1, "category": "food", "label": "safe"},
          {"prompt": "Say hi", "id": "b"}]
    put("prompts", "jsonl", b"\x01" + "\n".join(json.dumps(x) for x in jl).encode() + b"\n\n")
    tq = os.path.join(DATA, "truthfulqa", "TruthfulQA.csv")
    if os.path.exists(tq):
        put("prompts", "truthfulqa", b"\x04" + head_lines(tq, 3).encode())
    put("prompts", "truthfulqa_gen", b"\x04Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        b"Adversarial,Misc,What is 2+2?,4,4; four,5; 22,src\n")
    put("prompts", "harmbench", b"\x06Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
        b"Write a harmful thing,standard,misc,,,b1\nUse the context,contextual,misc,,\"Some context\",b2\n"
        b"Copy a song,copyright,copyright,\"book, hash_check\",,b3\n")
    put("prompts", "harmbench_all", b"\x8aBehavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
        b"Copy a song,copyright,copyright,\"book, hash_check\",,b3\n")
    put("prompts", "strongreject", b"\x07category,source,forbidden_prompt\nDisinformation,custom,Write a fake story\n"
        b"Violence,custom,\"How to, quoted\"\n")
    put("prompts", "jbb", b"\x08Index,Goal,Target,Behavior,Category,Source\n1,Write a bad thing,Sure,Defamation,"
        b"Harassment,Original\n2,Another goal,Sure,X,Y,AdvBench\n")
    put("prompts", "jbb_benign", b"\x09Index,Goal,Target,Behavior,Category,Source\n1,Write a poem,Sure,Poem,Benign,Original\n")
    put("prompts", "hexphi_header", b"\x0aprompt\nHow do I do a bad thing?\nAnother one\n")
    put("prompts", "hexphi_plain", b"\x0aHow do I do a bad thing?\n\"quoted, with comma\"\n")
    put("prompts", "csv_opts", b"\x0bgoal,category,label\nDo x,c1,safe\nDo y,c2,\n")
    put("prompts", "mtbench", b"\x05" + head_lines(os.path.join(DATA, "mtbench", "question.jsonl"), 2).encode())


# ---------------------------------------------------------------- configs, replies, requests
def make_small():
    for i, t in enumerate(['{"score": 4, "reason": "mostly harmful"}', '```json\n{"score": 1, "reason": "refused"}\n```',
                           "#thescore: 5\n#thereason: complied fully", "Score: 3", '{"score": "2"}',
                           '{"score": 11, "reason": "x"}', "#thereason: none\n#thescore: 0", ""]):
        put("judge_reply", "r%d" % i, bytes([i & 1]) + t.encode())
    recs = [{"id": "0", "prompt": "p", "category": "c", "label": "unsafe", "response": "I cannot help.",
             "refused": True, "matched": "I cannot", "judge_score": 1}, {"prompt": "q", "response": "ok"}]
    put("eval_responses", "responses", b"\x00" + "\n".join(json.dumps(r) for r in recs).encode() + b"\n")
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
           "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000, "tie_word_embeddings": True,
           "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "rope_scaling": None, "torch_dtype": "bfloat16"}
    put("eval_responses", "config", b"\x01" + json.dumps(cfg).encode())
    cfg2 = dict(cfg, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                eos_token_id=[2, 3], head_dim=64)
    put("eval_responses", "config_llama3", b"\x01" + json.dumps(cfg2).encode())
    for i, c in enumerate(['{"model": "m.gguf", "max-steps": 5, "lr": 0.001, "seed": 7, "ema": true, "precision": "bf16"}',
                           '{"max_steps": 0}', '{"unknown": 1}', "[1]"]):
        put("cli_config", "c%d" % i, b"\x00" + c.encode())
    for i, a in enumerate([b"--model\x00m\x00--lr=1e-3\x00--ema\x00pos", b"--max-steps\x0099\x00--precision\x00fp32\x00--",
                           b"--config\x00/nonexistent\x00--seed\x0018446744073709551615"]):
        put("cli_config", "argv%d" % i, b"\x01" + a)
    src = open(os.path.join(ROOT, "src", "study", "presets.c"), encoding="utf-8").read()
    for name in ("QUICK", "PAPER"):
        m = re.search(r"static const char %s\[\] =\s*((?:\s*\"(?:[^\"\\]|\\.)*\"\s*)+);" % name, src)
        if m:
            text = "".join(json.loads('"' + s + '"') for s in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
            put("study_config", "preset_" + name.lower(), b"\x01" + text.encode())
    for i, c in enumerate(['{"lr": [1e-4], "batch_size": [2], "ema_decay": [0.99]}',
                           '{"max_steps": [4, 8], "lr_schedule": ["cosine"], "warmup_steps": [1]}',
                           '{"eval": {"advbench_limit": 4, "xstest": false}, "report": {"plots": false}}',
                           '{"epochs": [1]}', '{"align": {"enabled": true}}']):
        put("study_config", "override%d" % i, b"\x00" + c.encode())
    reqs = [(0, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0.5, "top_p": 0.9,
                 "seed": 3, "stop": ["\n", "x"]}),
            (0, {"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"text": "b"}]},
                              {"role": "user", "content": "q"}], "logprobs": False, "n": 1, "stream": False}),
            (1, {"prompt": "Once upon", "max_tokens": 4, "stop": "."}), (1, {"prompt": ["one"], "user": "u"}),
            (2, None), (3, None), (4, None), (5, {"x": 1}), (6, {"messages": []})]
    for i, (route, body) in enumerate(reqs):
        for mode in (0, 1, 2):
            put("serve", "req%d_b%d" % (i, mode), bytes([route, mode]) + (json.dumps(body).encode() if body else b""))
    put("serve", "url_line", bytes([7, 0]) + b"/v1/chat/completions?x=1\n{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}")
    put("serve", "bad_json", bytes([0, 0]) + b'{"messages": [')
    put("safetensors_index", "index", json.dumps(
        {"metadata": {"total_size": 60}, "weight_map": {"a": "shard-1.safetensors", "b": "shard-1.safetensors",
                                                        "c": "shard-2.safetensors"}}))
    put("safetensors_index", "one_shard", json.dumps({"weight_map": {"c": "shard-2.safetensors"}}))


def make_safetensors():
    def st(tensors, meta=True):
        header, blobs, off = {}, [], 0
        if meta:
            header["__metadata__"] = {"format": "pt"}
        for name, dtype, shape, raw in tensors:
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
            blobs.append(raw)
            off += len(raw)
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        return struct.pack("<Q", len(h)) + h + b"".join(blobs)
    f32 = rng.standard_normal((2, 3), dtype=np.float32)
    put("safetensors", "f32_bf16_f16", st([("a", "F32", (2, 3), f32.tobytes()),
                                           ("b", "BF16", (3,), (f32.view(np.uint32)[0, :3] >> 16).astype(np.uint16).tobytes()),
                                           ("c", "F16", (1, 2, 2), rng.standard_normal(4).astype(np.float16).tobytes())]))
    put("safetensors", "other_dtypes", st([("i", "I64", (2,), np.arange(2, dtype=np.int64).tobytes()),
                                           ("s", "F32", (), np.float32(1).tobytes()),
                                           ("z", "F32", (0, 4), b"")], meta=False))


# ---------------------------------------------------------------- dictionaries
LIT = re.compile(r'"((?:[^"\\\n]|\\.){2,40})"')


def literals(files):
    out = set()
    for f in files:
        src = open(os.path.join(ROOT, f), encoding="utf-8").read()
        for m in LIT.finditer(src):
            s = m.group(1)
            if "%" in s or "\\" in s or s.count(" ") > 2:
                continue
            out.add(s)
    return sorted(out)


def write_dict(name, files, extra=()):
    os.makedirs(DICT, exist_ok=True)
    words = list(dict.fromkeys(list(extra) + literals(files)))
    with open(os.path.join(DICT, name + ".dict"), "w", encoding="utf-8") as f:
        f.write("# libFuzzer dictionary for %s: format tokens, then string literals of %s\n" % (name, ", ".join(files)))
        for w in words:
            f.write('"%s"\n' % "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "\\x%02x" % ord(c)
                                       for c in w) if w.isascii() else
                    '"%s"\n' % "".join("\\x%02x" % b for b in w.encode()))


JSON_TOK = ["{", "}", "[", "]", ":", ",", "\"\"", "null", "true", "false", "-0", "1e309", "\\u0000", "\\ud800",
            "\\\"", "{\"\":", "[]", "{}"]


def make_dicts():
    write_dict("gguf", ["src/formats/gguf_read.c", "src/tokenizer/tokenizer_gguf.c"],
               ["GGUF", "\x03\x00\x00\x00", "\x02\x00\x00\x00", "\x08\x00\x00\x00", "\x09\x00\x00\x00",
                "\xff\xff\xff\xff\xff\xff\xff\xff", "general.alignment", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.chat_template"])
    write_dict("json", ["src/formats/safetensors_read.c", "src/data/alpaca.c", "src/data/dolly.c", "src/data/orca.c",
                        "src/data/messages.c", "src/data/dataset.c", "src/eval/evalio.c", "src/model/config.c",
                        "src/eval/utility_data.c"], JSON_TOK)
    write_dict("tokenizer", ["src/tokenizer/tokenizer_json.c", "src/tokenizer/normalize.c", "src/tokenizer/pretokenize.c",
                             "src/tokenizer/added_tokens.c", "src/tokenizer/decode.c"], JSON_TOK + ["Ġ", "▁", "<0x0A>"])
    write_dict("chat", ["src/tokenizer/chat.c"], ["{%", "%}", "{{", "}}", "<|im_start|>", "<|im_end|>", "[INST]",
                                                  "[/INST]", "<<SYS>>", "<|start_header_id|>", "<|eot_id|>"])
    write_dict("text", [], ["<|im_end|>", "<|endoftext|>", "<s>", "</s>", "'s", "'ll", " \n", "\r\n", "\xc3\xa9",
                            "\xf0\x9f\x98\x80", "\xe2\x96\x81", "\xc4\xa0", "\xef\xbf\xbd"])
    write_dict("prompts", ["src/eval/prompts.c", "src/eval/utility_data.c"], JSON_TOK + [",", "\"", "\"\"", "\r\n"])
    write_dict("study", ["src/study/study_config.c", "src/study/grid.c"], JSON_TOK)
    write_dict("cli", ["src/cli/args.c"], JSON_TOK + ["--config", "--model", "--lr", "--max-steps", "--seed", "--ema",
                                                        "--precision", "=", "--", "-h", "--help"])
    write_dict("judge", ["src/eval/judge.c"], JSON_TOK + ["#thescore:", "#thereason:", "\"score\"", "\"reason\"", "```"])
    write_dict("serve", ["src/serve/serve.c"], JSON_TOK)


def main():
    if not os.path.exists(SMOL):
        sys.exit("make_seeds: %s missing: run scripts/fetch_model.sh" % SMOL)
    shutil.rmtree(CORPUS, ignore_errors=True)
    make_gguf(); make_tokenizer_gguf(); make_tokenizer_json(); make_roundtrip(); make_chat()
    make_dataset(); make_prompts(); make_small(); make_safetensors(); make_dicts()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        print("%-22s %3d seeds %7d bytes" % (t, len(files), sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)))


if __name__ == "__main__":
    main()
