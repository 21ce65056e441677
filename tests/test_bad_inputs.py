"""Every file and argument the tool reads, broken on purpose: one line per problem, exit 2, no traceback.

Each case: a name, files written over a copy of the tiny fixture corpus (path -> str or bytes; None
deletes; `{m}` in a file is the tiny model), the command (`{c}` is the corpus folder, `{t}` the
test's tmp folder), the exit code and a fragment the message must hold. Run in-process through `assistant.cli.main` (fast), with the
console script's output captured.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from assistant.cli import main
from tiny_model import TINY, copy_tiny_corpus

QA_ROW = {"id": "x-1", "question": "Q?", "answer": "A.", "key_facts": ["A"], "source": "docs/returns.md",
          "fact_id": "x", "split": "test", "kind": "answerable"}
SQUAD = {"data": [{"title": "T", "paragraphs": [{"context": "The ferry leaves at noon.", "qas": [
    {"id": "q1", "question": "When does the ferry leave?", "answers": "at noon"}]}]}]}


def qa(**changes) -> str:
    return json.dumps({**QA_ROW, **changes}) + "\n"


CASES = [
    # -- corpus.yaml ---------------------------------------------------------------------------
    ("yaml not utf-8", {"corpus.yaml": b"name: tiny\ndescription: caf\xe9\n"}, ["check", "{c}"], 2,
     "corpus.yaml:2: not UTF-8 (byte 0xe9 at offset 27)"),
    ("yaml is a folder", {"corpus.yaml": None, "corpus.yaml/x": "x"}, ["check", "{c}"], 2, "is a folder"),
    ("yaml syntax", {"corpus.yaml": "name: tiny\nmodel: [unclosed\n"}, ["check", "{c}"], 2, "invalid YAML"),
    ("yaml nested key line", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\ngeneration:\n  batch_size: 4\n"
                              "lora:\n  batch_size: 0\n"}, ["check", "{c}"], 2, "corpus.yaml:7: lora.batch_size"),
    ("yaml duplicate section", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\nlora:\n  epochs: 1\n"
                                "lora:\n  batch_size: 2\n"}, ["check", "{c}"], 2, "corpus.yaml:6: duplicate key 'lora'"),
    ("yaml duplicate nested key", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\n  name: other\n"},
     ["check", "{c}"], 2, "corpus.yaml:4: duplicate key 'model.name'"),
    ("yaml not a mapping", {"corpus.yaml": "- a\n- b\n"}, ["check", "{c}"], 2, "expected a mapping"),
    ("yaml unknown field", {"corpus.yaml": "name: tiny\nmodle:\n  name: x\n"}, ["check", "{c}"], 2, "unknown field"),
    ("yaml wrong type", {"corpus.yaml": "name: tiny\ngeneration:\n  max_new_tokens: lots\n"}, ["check", "{c}"], 2,
     "corpus.yaml:3: generation.max_new_tokens"),
    ("device tpu9", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\n  device: tpu9\n"}, ["check", "{c}"], 2,
     "corpus.yaml:4: model.device"),
    ("bad dtype", {"corpus.yaml": "name: tiny\nmodel:\n  dtype: float8\n"}, ["check", "{c}"], 2, "model.dtype"),
    ("runs_dir is a file", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\nruns_dir: afile\n",
                            "afile": "x"}, ["check", "{c}"], 2, "runs_dir"),
    ("qa_file outside", {"corpus.yaml": "name: tiny\nqa_file: ../other/qa.jsonl\n"}, ["check", "{c}"], 2,
     "corpus.yaml:2: qa_file"),
    ("yaml missing", {"corpus.yaml": None}, ["check", "{c}"], 2, "corpus.yaml:1: file not found"),
    ("name with space", {"corpus.yaml": "name: my shop\n"}, ["check", "{c}"], 2, "name"),
    # -- the corpus folder ---------------------------------------------------------------------
    ("folder name with space", {"corpus.yaml": "model:\n  name: {m}\n"}, ["check", "{c}"], 2,
     "defaults to the folder's name"),
    ("corpus missing", {}, ["check", "{t}/nowhere"], 2, "corpus folder not found"),
    ("corpus is a file", {}, ["check", "{c}/qa.jsonl"], 2, "corpus folder not found"),
    ("docs missing", {"docs/returns.md": None, "docs/service.md": None, "docs": None}, ["check", "{c}"], 2, "docs/"),
    # -- qa.jsonl ------------------------------------------------------------------------------
    ("qa not utf-8", {"qa.jsonl": b'{"id": "a", "question": "Caf\xe9?"}\n'}, ["check", "{c}"], 2,
     "qa.jsonl:1: not UTF-8 (byte 0xe9 at offset 28)"),
    ("qa is a folder", {"qa.jsonl": None, "qa.jsonl/x": "x"}, ["check", "{c}"], 2, "is a folder"),
    ("qa invalid json", {"qa.jsonl": '{"id": "a",\n'}, ["check", "{c}"], 2, "qa.jsonl:1: invalid JSON"),
    ("qa not an object", {"qa.jsonl": "[1, 2]\n"}, ["check", "{c}"], 2, "expected a JSON object"),
    ("qa deeply nested", {"qa.jsonl": "[" * 100_000 + "]" * 100_000 + "\n"}, ["check", "{c}"], 2, "nested"),
    ("qa missing field", {"qa.jsonl": json.dumps({"id": "a"}) + "\n"}, ["check", "{c}"], 2, "missing field"),
    ("qa duplicate id", {"qa.jsonl": qa() + qa()}, ["check", "{c}"], 2, "duplicate id"),
    ("qa unknown source", {"qa.jsonl": qa(source="docs/nope.md")}, ["check", "{c}"], 2, "not a document"),
    ("qa bad split", {"qa.jsonl": qa(split="dev")}, ["check", "{c}"], 2, "split"),
    ("qa no answer", {"qa.jsonl": qa(answer="", key_facts=[])}, ["check", "{c}"], 2, "neither"),
    ("qa empty: eval", {"qa.jsonl": ""}, ["eval", "{c}", "--variants", "prompted"], 2, "no test questions"),
    ("qa missing: eval", {"qa.jsonl": None}, ["eval", "{c}", "--variants", "prompted"], 2, "qa.jsonl"),
    ("qa empty: check", {"qa.jsonl": ""}, ["check", "{c}"], 2, "no test questions"),
    # -- documents -----------------------------------------------------------------------------
    ("doc not utf-8", {"docs/latin.md": b"# Caf\xe9\n\nOpen daily.\n"}, ["check", "{c}"], 2,
     "latin.md:1: not UTF-8 (byte 0xe9 at offset 5); convert it, e.g. iconv"),
    ("doc is binary", {"docs/image.md": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))}, ["check", "{c}"], 2,
     "binary"),
    ("doc empty", {"docs/empty.md": ""}, ["check", "{c}"], 2, "empty"),
    # -- command-line arguments ----------------------------------------------------------------
    ("ask empty", {}, ["ask", "{c}", ""], 2, "empty question"),
    ("ask blank", {}, ["ask", "{c}", "   "], 2, "empty question"),
    ("ask too long", {}, ["ask", "{c}", "x" * 1001], 2, "over the limit"),
    ("retrieval k -1", {}, ["retrieval", "{c}", "-k", "-1"], 2, "-k must be at least 1"),
    ("retrieval k 0", {}, ["retrieval", "{c}", "-k", "0"], 2, "-k must be at least 1"),
    ("eval limit 0", {}, ["eval", "{c}", "--limit", "0"], 2, "--limit"),
    ("app remote without flag", {}, ["app", "{c}", "--host", "0.0.0.0"], 2, "--allow-remote"),
    ("app bad auth", {}, ["app", "{c}", "--auth", "nopassword"], 2, "USER:PASSWORD"),
    ("app bad port", {}, ["app", "{c}", "--port", "70000"], 2, "out of range"),
    ("serve max body 0", {}, ["serve", "{c}", "--max-body-bytes", "0"], 2, "--max-body-bytes"),
    ("serve port 99999", {}, ["serve", "{c}", "--port", "99999"], 2, "99999"),
    # -- models --------------------------------------------------------------------------------
    ("build missing model", {"corpus.yaml": "name: tiny\nmodel:\n  name: /no/such/model\n"},
     ["build", "{c}", "--variant", "sft"], 2, "/no/such/model"),
    ("check missing model folder", {"corpus.yaml": "name: tiny\nmodel:\n  name: ./models/nope\n"}, ["check", "{c}"],
     2, "corpus.yaml:3: model.name './models/nope': no such folder"),
    ("check model folder without config", {"corpus.yaml": "name: tiny\nmodel:\n  name: {c}/docs\n"},
     ["check", "{c}"], 2, "without config.json"),
    ("check gguf that is not one", {"corpus.yaml": "name: tiny\nmodel:\n  name: {c}/m.gguf\n", "m.gguf": "junk"},
     ["check", "{c}"], 2, "not a GGUF file"),
    ("ask gguf that is not one", {"corpus.yaml": "name: tiny\nmodel:\n  name: {c}/m.gguf\n", "m.gguf": "junk"},
     ["ask", "{c}", "--variant", "prompted", "Hi?"], 2, "not a GGUF file"),
    ("build missing embedder", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\nretrieval:\n"
                                "  embedder: /no/such/embedder\n"}, ["build", "{c}", "--variant", "rag"], 2,
     "/no/such/embedder"),
    # -- import --------------------------------------------------------------------------------
    ("import squad answers string", {"squad.json": json.dumps(SQUAD)}, ["import", "{c}/squad.json", "{t}/out"], 2,
     "answers"),
    ("import not utf-8", {"qa2.jsonl": b'{"question": "Caf\xe9?", "answer": "x"}\n'},
     ["import", "{c}/qa2.jsonl", "{t}/out", "--docs", "{c}/docs"], 2, "not UTF-8"),
    ("import json invalid", {"bad.json": "{"}, ["import", "{c}/bad.json", "{t}/out"], 2, "invalid JSON"),
    ("import missing", {}, ["import", "{t}/none.jsonl", "{t}/out"], 2, "file not found"),
    ("import fraction", {}, ["import", "{c}/qa.jsonl", "{t}/out", "--test-fraction", "2"], 2, "--test-fraction"),
]


if not torch.cuda.is_available():  # a GPU the machine lacks: caught by check, one line from ask
    CASES += [
        ("check cuda without gpu", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\n  device: cuda\n"},
         ["check", "{c}"], 2, "corpus.yaml:4: model.device is 'cuda', but torch"),
        ("ask cuda:3 without gpu", {"corpus.yaml": "name: tiny\nmodel:\n  name: {m}\n  device: cuda:3\n"},
         ["ask", "{c}", "--variant", "prompted", "Hi?"], 2, "model.device is 'cuda:3'"),
    ]


@pytest.mark.parametrize("name,files,argv,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(name, files, argv, code, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    corpus = tmp_path / ("my shop" if name == "folder name with space" else "tiny")
    copy_tiny_corpus(corpus, runs_dir=tmp_path / "runs")
    for rel, content in files.items():
        path = corpus / rel
        if content is None:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(
            content.replace("{c}", str(corpus)).replace("{m}", TINY))
    args = [a.replace("{c}", str(corpus)).replace("{t}", str(tmp_path)) for a in argv]
    assert main(args) == code
    out = capsys.readouterr()
    text = out.err + out.out  # `check` reports on stdout, every other verb on stderr
    assert "Traceback" not in text
    named = [line for line in text.splitlines() if fragment in line]
    assert named and all(line.startswith("error: ") for line in named), text


def test_the_table_covers_at_least_forty_bad_inputs():
    assert len(CASES) >= 40
