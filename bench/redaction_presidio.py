"""Microsoft Presidio on the same inputs, for the side-by-side in bench/redaction_eval.py.

Runs in its own venv (``~/.cache/custos/presidio-venv``: presidio-analyzer, spaCy, Faker); it does
not import Custos. No spaCy model is installed: the official ``en_core_web_sm`` is not published on
PyPI (only third-party re-uploads are), so Presidio runs with a blank spaCy English pipeline, i.e.
its pattern/checksum recognizers (phone via ``phonenumbers``, e-mail, credit card, IBAN, IP, SSN,
crypto, URL, date, ...) without NER. NER only adds PERSON/LOCATION-style types, none of which are
in this evaluation, and without it Presidio is faster, so the speed ratio is in Presidio's favour.

    presidio-venv/bin/python bench/redaction_presidio.py spans IN.jsonl OUT.jsonl
    presidio-venv/bin/python bench/redaction_presidio.py speed TEXT_FILE
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def analyzer():
    import logging

    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # Offline: the bundled public-suffix snapshot, no download attempt.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())
    path = Path(tempfile.mkdtemp(prefix="spacy-blank-")) / "blank_en"
    spacy.blank("en").to_disk(path)
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(path)}])
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def spans(src: str, dst: str) -> None:
    a = analyzer()
    t0 = time.perf_counter()
    size = 0
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            text = json.loads(line)["text"]
            size += len(text.encode())
            found = [
                [r.start, r.end, r.entity_type, round(r.score, 3)]
                for r in a.analyze(text=text, language="en")
            ]
            fout.write(json.dumps(found) + "\n")
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "bytes": size, "mb_per_s": size / dt / 1e6}))


def speed(path: str) -> None:
    a = analyzer()
    text = Path(path).read_text(encoding="utf-8")
    # Presidio analyzes one document at a time; feed it paragraph-sized pieces as a proxy would.
    pieces = text.split("\n")
    a.analyze(text=pieces[0], language="en")  # warm-up
    t0 = time.process_time()  # CPU time, as for Custos: the box is shared
    for piece in pieces:
        a.analyze(text=piece, language="en")
    dt = time.process_time() - t0
    size = len(text.encode())
    print(json.dumps({"seconds": dt, "bytes": size, "mb_per_s": size / dt / 1e6}))


if __name__ == "__main__":
    {"spans": lambda: spans(sys.argv[2], sys.argv[3]), "speed": lambda: speed(sys.argv[2])}[sys.argv[1]]()
