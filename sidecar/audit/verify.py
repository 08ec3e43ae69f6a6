"""Checks an audit trail: every record's hash, the chain links, contiguous sequence numbers and every
checkpoint's Ed25519 signature. Sources: a spool directory, one chain directory, a JSON-lines export
(records and checkpoints mixed), or documents read from Elasticsearch.

Problems are named the way an auditor asks: ``altered`` (content no longer matches its hash),
``missing`` (a range of sequence numbers is gone), ``inserted`` (a sequence number appears twice or a
record does not link to its predecessor), ``reordered`` (records out of chain order in a file),
``bad_signature`` (a checkpoint is forged or altered, or names another signing key than the public
key given: then the detail says to verify with that key), ``checkpoint_mismatch`` (the chain was rewritten
before a signed checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import GENESIS, record_hash
from .keys import Keyring, checkpoint_ok, key_id
from .spool import CHECKPOINTS, DROPPED, chain_dirs, is_chain_dir, iter_lines, list_segments

MAX_PROBLEMS = 50


@dataclass
class Problem:
    kind: str
    chain: str
    seq: int | None
    where: str
    detail: str

    def line(self) -> str:
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.kind.upper()}: chain {self.chain}{seq} ({self.where}): {self.detail}"


@dataclass
class ChainInput:
    chain_id: str
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (where, doc) in stored order
    checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    ordered: bool = True  # stored order is meaningful (files); Elasticsearch has none


@dataclass
class ChainSummary:
    chain_id: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    covered_seq: int = 0
    lost: int = 0  # records the trail itself recorded as lost (loss records, loss notes)
    restarts: int = 0  # unclean stops recorded in the chain
    # [from, to, reason] of every signed pruning note (retention: room/age/size; "shipped" otherwise)
    pruned: list[list[Any]] = field(default_factory=list)
    signers: dict[str, int] = field(default_factory=dict)  # key id -> checkpoints it signed

    def pruned_ranges(self) -> list[tuple[int, int]]:
        """The pruned seq ranges, merged where they touch."""
        out: list[tuple[int, int]] = []
        for lo, hi, _why in sorted(self.pruned):
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out


@dataclass
class Report:
    chains: list[ChainSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # facts that do not fail the verification
    unreadable: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def summary(self) -> str:
        recs = sum(c.records for c in self.chains)
        cps = sum(c.checkpoints for c in self.chains)
        lines = [f"{len(self.chains)} chain(s), {recs} record(s), {cps} signed checkpoint(s)"]
        for c in self.chains:
            rng = f"seq {c.first_seq}-{c.last_seq}" if c.records else "no records"
            uncovered = (c.last_seq or 0) - c.covered_seq
            tail = f"; {uncovered} newest record(s) not yet under a checkpoint" if uncovered > 0 else ""
            if c.lost:
                tail += f"; {c.lost} record(s) recorded as lost"
            if c.restarts:
                tail += f"; {c.restarts} unclean restart(s)"
            if c.pruned:
                ranges = ", ".join(f"{lo}-{hi}" for lo, hi in c.pruned_ranges())
                why = "/".join(sorted({str(p[2]) for p in c.pruned}))
                tail += f"; pruned by policy ({why}) under {len(c.pruned)} signed note(s): seq {ranges}"
            if len(c.signers) > 1:  # a rotated signing key: which key signed what
                tail += "; signed by " + ", ".join(f"{k} ({n})" for k, n in c.signers.items())
            lines.append(f"  {c.chain_id}: {c.records} records, {rng}, {c.checkpoints} checkpoints{tail}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _audit(doc: Any) -> dict[str, Any] | None:
    audit = doc.get("audit") if isinstance(doc, dict) else None
    if not isinstance(audit, dict):
        return None
    return audit


def _seq_key(doc: Any) -> int:
    seq = (_audit(doc) or {}).get("seq")
    return seq if isinstance(seq, int) else -1


def _self_records(ci: ChainInput, summary: ChainSummary, report: Report) -> list[dict[str, Any]]:
    """The trail's records about itself: loss records join the loss notes (so a gap is reported
    with its cause, in a spool and in Elasticsearch alike); restart records are returned."""
    restarts = []
    for where, doc in ci.records:
        event = doc.get("event") if isinstance(doc, dict) else None
        action = event.get("action") if isinstance(event, dict) else None
        custos = doc.get("custos") if isinstance(doc.get("custos"), dict) else {}
        if action == "audit_loss" and isinstance(custos.get("loss"), dict):
            ranges = custos["loss"].get("ranges") or [custos["loss"]]
            for r in ranges:
                if isinstance(r, dict) and isinstance(r.get("from"), int) and isinstance(r.get("to"), int):
                    ci.dropped.append({"from": r["from"], "to": r["to"], "reason": r.get("reason")})
        elif action == "audit_restart" and isinstance(custos.get("restart"), dict):
            info = dict(custos["restart"])
            info["seq"] = _seq_key(doc)
            info["where"] = where
            restarts.append(info)
    seen: set[tuple[Any, Any]] = set()
    for d in ci.dropped:
        key = (d.get("from"), d.get("to"))
        if key not in seen and isinstance(d.get("from"), int) and isinstance(d.get("to"), int):
            seen.add(key)
            summary.lost += d["to"] - d["from"] + 1
    summary.restarts = len(restarts)
    for r in sorted(restarts, key=lambda r: r["seq"]):
        prev, cp = r.get("previous_seq"), r.get("checkpoint_seq")
        unsigned = r.get("unsigned") or 0
        report.warnings.append(
            f"chain {ci.chain_id}: unclean stop before seq {r['seq']} (restart record at {r['where']}): "
            f"the previous run's chain ends at seq {prev} on disk; {unsigned} record(s) of it "
            f"(after its last signed checkpoint, seq {cp}) were not under a signature when it stopped "
            "and could have been cut off unprovably; records it sealed but never wrote were not "
            "completely answered, and their seq numbers are used again from here"
        )
    return restarts


def verify_chain(ci: ChainInput, public: Ed25519PublicKey | Keyring, report: Report) -> None:
    summary = ChainSummary(ci.chain_id)
    report.chains.append(summary)
    records = ci.records
    if not ci.ordered:
        records = sorted(records, key=lambda r: _seq_key(r[1]))
    restarts = _self_records(ci, summary, report)
    hashes: dict[int, str] = {}
    seen: dict[int, str] = {}
    prev_seq: int | None = None
    prev_hash = GENESIS
    remaining_seqs: list[int] = []
    if ci.ordered:
        remaining_seqs = [_seq_key(r[1]) for r in records]
    later: dict[int, int] = {}
    for s in remaining_seqs:
        later[s] = later.get(s, 0) + 1
    chain = ci.chain_id
    for where, doc in records:
        audit = _audit(doc)
        if audit is None or not isinstance(audit.get("seq"), int) or not isinstance(audit.get("hash"), str):
            report.add(Problem("altered", chain, None, where, "record has no valid audit.seq/audit.hash"))
            continue
        seq = audit["seq"]
        if ci.ordered:
            later[seq] -= 1
        summary.records += 1
        if summary.first_seq is None:
            summary.first_seq = seq
        summary.last_seq = max(summary.last_seq or 0, seq)
        if record_hash(doc) != audit["hash"]:
            report.add(Problem("altered", chain, seq, where, "content does not match its audit.hash"))
        if seq in seen:
            report.add(
                Problem("inserted", chain, seq, where, f"seq {seq} appears twice (also at {seen[seq]})")
            )
            continue
        seen[seq] = where
        hashes[seq] = audit["hash"]
        if prev_seq is None:
            if seq == 1 and audit.get("prev_hash") != GENESIS:
                report.add(Problem("inserted", chain, seq, where, "first record does not start the chain"))
            elif seq > 1:
                _check_head(ci, public, report, seq, where, audit.get("prev_hash"))
        elif seq == prev_seq + 1:
            if audit.get("prev_hash") != hashes.get(prev_seq, prev_hash):
                report.add(
                    Problem(
                        "inserted",
                        chain,
                        seq,
                        where,
                        f"audit.prev_hash does not match the hash of seq {prev_seq}",
                    )
                )
        elif seq <= prev_seq:
            report.add(Problem("reordered", chain, seq, where, f"seq {seq} comes after seq {prev_seq}"))
        else:
            lo, hi = prev_seq + 1, seq - 1
            if ci.ordered and any(later.get(s, 0) > 0 for s in range(lo, min(hi, lo + 10_000) + 1)):
                report.add(
                    Problem("reordered", chain, seq, where, f"seq {lo}-{hi} come later, after seq {seq}")
                )
            else:
                note = next((d for d in ci.dropped if d.get("from", 0) <= hi and d.get("to", 0) >= lo), None)
                why = (
                    f" (the spool notes: {note.get('reason')}, seq {note.get('from')}-{note.get('to')})"
                    if note
                    else ""
                )
                report.add(Problem("missing", chain, lo, where, f"missing seq range {lo}-{hi}{why}"))
        prev_seq = max(seq, prev_seq or 0)
        prev_hash = audit["hash"]
    # Checkpoints: signature first, then agreement with the records we hold.
    first = summary.first_seq or 0
    last = summary.last_seq or 0
    tail_reported = False
    for where, cp in ci.checkpoints:
        audit = _audit(cp) or {}
        seq = audit.get("seq")
        if audit.get("type") == "prune":
            if not checkpoint_ok(public, cp):
                report.add(_signature_problem(public, chain, seq, where, audit, "pruning note"))
            elif isinstance(audit.get("from"), int) and isinstance(seq, int):
                summary.pruned.append([audit["from"], seq, str(audit.get("reason") or "shipped")])
            continue
        if not checkpoint_ok(public, cp):
            report.add(_signature_problem(public, chain, seq, where, audit, "checkpoint"))
            continue
        summary.checkpoints += 1
        signer = str(audit.get("key_id") or "?")
        summary.signers[signer] = summary.signers.get(signer, 0) + 1
        if not isinstance(seq, int):
            continue
        if seq in hashes:
            restart = next(
                (
                    r
                    for r in restarts
                    if isinstance(r.get("previous_seq"), int) and r["previous_seq"] < seq and r["seq"] <= seq
                ),
                None,
            )
            if hashes[seq] != audit.get("hash") and restart is not None:
                prev = restart["previous_seq"]
                if restart.get("reported"):
                    continue
                restart["reported"] = True
                report.add(
                    Problem(
                        "missing",
                        chain,
                        prev + 1,
                        where,
                        f"missing seq range {prev + 1}-{seq}: a signed checkpoint of the run before the "
                        f"unclean stop covers records up to seq {seq}, but its chain ends at seq {prev} "
                        f"on disk (lost in the crash); the restart at seq {restart['seq']} reused these "
                        f"seq numbers{_noted(ci, prev + 1, seq)}",
                    )
                )
                continue
            if hashes[seq] != audit.get("hash"):
                report.add(
                    Problem(
                        "checkpoint_mismatch",
                        chain,
                        seq,
                        where,
                        f"the chain at seq {seq} differs from the signed checkpoint: records at or "
                        "before it were altered, inserted or removed and re-hashed",
                    )
                )
                continue
            summary.covered_seq = max(summary.covered_seq, seq)
        elif seq > last:
            if tail_reported:
                continue  # the latest checkpoint beyond the end says it all (reported once)
            tail_reported = True
            top = max((s2 for s2 in _signed_seqs(ci, public) if s2 > last), default=seq)
            report.add(
                Problem(
                    "missing",
                    chain,
                    last + 1,
                    where,
                    f"missing seq range {last + 1}-{top}: a signed checkpoint covers records up to "
                    f"seq {top} but the trail ends at seq {last} (truncated){_noted(ci, last + 1, top)}",
                )
            )
        elif seq >= first:
            pass  # a hole inside the range is already reported above
        # seq < first: those records were pruned from this copy after shipping; nothing to compare
    if not tail_reported:
        # Losses the spool noted after the last record present (sealed, never written), with no
        # checkpoint on disk beyond them (e.g. the disk was full).
        notes = [d for d in ci.dropped if isinstance(d.get("to"), int) and d["to"] > last]
        if notes:
            lo = max(last + 1, min(int(d.get("from", last + 1)) for d in notes))
            hi = max(d["to"] for d in notes)
            report.add(
                Problem(
                    "missing",
                    chain,
                    lo,
                    "dropped.jsonl",
                    f"missing seq range {lo}-{hi}: sealed but never written{_noted(ci, lo, hi)}",
                )
            )


_OTHER_KEY = "signed with key id "


def _signature_problem(
    public: Ed25519PublicKey | Keyring, chain: str, seq: Any, where: str, audit: dict[str, Any], what: str
) -> Problem:
    """A signature that does not verify (``bad_signature``). When the checkpoint names another key id
    than the public key given, the detail says so first: verify with that key (a wrong key is not a
    forgery, though a forger could name any key id); else it is forged or altered."""
    named = audit.get("key_id")
    if isinstance(public, Keyring):
        if isinstance(named, str) and named and named not in public.keys:
            detail = (
                f"{what} {_OTHER_KEY}{named}, which is not in the keyring ({', '.join(public.ids)}): an "
                "unknown or removed key (forged unless it is a key of yours: add its public key)"
            )
        else:
            detail = f"{what} signature does not verify with key {named} (forged or altered {what})"
        return Problem("bad_signature", chain, seq, where, detail)
    kid = key_id(public)
    if isinstance(named, str) and named and named != kid:
        detail = (
            f"{what} {_OTHER_KEY}{named}, not with the public key given (key id {kid}): verify with "
            f"that sidecar's public key (--public-key); if {named} is not a key of yours, forged"
        )
    else:
        detail = f"{what} signature does not verify with the public key {kid} (forged or altered {what})"
    return Problem("bad_signature", chain, seq, where, detail)


def wrong_key_ids(report: Report) -> list[str]:
    """The key ids the trail's checkpoints name when the public key given is simply not the trail's:
    none of its checkpoints verified, every signature problem is a checkpoint naming another key id,
    and nothing else was found but what such a key explains (pruned heads it cannot vouch for). The
    caller answers with one line (exit 2). Empty otherwise."""
    sigs = [p for p in report.problems if p.kind == "bad_signature"]
    other = [p for p in sigs if _OTHER_KEY in p.detail]
    if not other or len(other) != len(sigs) or any(c.checkpoints for c in report.chains):
        return []
    if any(p.kind in ("altered", "inserted", "reordered", "checkpoint_mismatch") for p in report.problems):
        return []
    return sorted({p.detail.split(_OTHER_KEY, 1)[1].split(",", 1)[0] for p in other})


def _check_head(
    ci: ChainInput, public: Ed25519PublicKey | Keyring, report: Report, first: int, where: str, prev_hash: Any
) -> None:
    """The chain starts after seq 1: every record before it must be covered by signed pruning notes
    (written by the spool before it deletes a shipped file), and the first record present must link
    to the last pruned one. Anything else is a missing head (deleted records, or records the spool
    dropped), whatever copy this is: a checkpoint's hash covers the chain from seq 1."""
    notes = []
    for _w, doc in ci.checkpoints:
        audit = _audit(doc) or {}
        lo, hi = audit.get("from"), audit.get("seq")
        if audit.get("type") == "prune" and isinstance(lo, int) and isinstance(hi, int):
            if checkpoint_ok(public, doc):
                notes.append((lo, hi, audit.get("hash")))
    notes.sort()
    reach = 0
    link = None
    gaps: list[tuple[int, int]] = []  # ranges before `first` that no pruning note covers
    for lo, hi, digest in notes:
        if lo > first - 1:
            break
        if lo > reach + 1:
            gaps.append((reach + 1, lo - 1))
        if hi > reach:
            reach, link = hi, (hi, digest)
    if reach < first - 1:
        gaps.append((reach + 1, first - 1))
    elif link is not None and link[0] == first - 1 and link[1] != prev_hash:
        report.add(
            Problem(
                "inserted",
                ci.chain_id,
                first,
                where,
                f"the first record present does not link to seq {first - 1} of the signed pruning note",
            )
        )
    for lo, hi in gaps:
        why = _noted(ci, lo, hi) or (
            ": records before the first one present are gone and no signed pruning note covers them"
        )
        report.add(Problem("missing", ci.chain_id, lo, where, f"missing seq range {lo}-{hi}{why}"))


def _signed_seqs(ci: ChainInput, public: Ed25519PublicKey | Keyring) -> list[int]:
    out = []
    for _where, cp in ci.checkpoints:
        seq = (_audit(cp) or {}).get("seq")
        if isinstance(seq, int) and checkpoint_ok(public, cp):
            out.append(seq)
    return out


def _noted(ci: ChainInput, lo: int, hi: int) -> str:
    """What the spool's loss notes say about seq ``lo``-``hi`` ('' when nothing)."""
    notes = [d for d in ci.dropped if d.get("from", 0) <= hi and d.get("to", 0) >= lo]
    if not notes:
        return ""
    why = "; ".join(sorted({str(d.get("reason")) for d in notes}))
    return f" (the spool notes: {why}, seq {notes[0].get('from')}-{notes[-1].get('to')})"


# -- sources -----------------------------------------------------------------------------------------
def _read_jsonl(path: Path, into: dict[str, ChainInput], report: Report, kind: str | None = None) -> None:
    for lineno, (_pos, raw) in enumerate(iter_lines(path), 1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            report.unreadable += 1
            report.add(Problem("altered", "?", None, where, f"line is not valid JSON ({exc})"))
            continue
        audit = _audit(doc) or {}
        chain = str(audit.get("chain_id", "?"))
        ci = into.setdefault(chain, ChainInput(chain))
        if audit.get("type") in ("checkpoint", "prune") or kind == "checkpoint":
            ci.checkpoints.append((where, doc))
        else:
            ci.records.append((where, doc))


def load_path(path: Path, report: Report) -> list[ChainInput]:
    chains: dict[str, ChainInput] = {}
    if path.is_file():
        _read_jsonl(path, chains, report)
        return list(chains.values())
    dirs = [path] if is_chain_dir(path) else chain_dirs(path)
    for d in dirs:
        for _first, seg in list_segments(d):
            _read_jsonl(seg, chains, report)
        if (d / CHECKPOINTS).exists():
            _read_jsonl(d / CHECKPOINTS, chains, report, kind="checkpoint")
        if (d / DROPPED).exists():
            notes = [orjson.loads(line) for _p, line in iter_lines(d / DROPPED)]
            for ci in chains.values():
                if ci.chain_id == d.name:
                    ci.dropped.extend(notes)
    return list(chains.values())


def load_docs(
    records: Iterable[tuple[str, dict[str, Any]]], checkpoints: Iterable[tuple[str, dict[str, Any]]]
) -> list[ChainInput]:
    """Documents from Elasticsearch (``where`` = index/_id); their stored order means nothing."""
    chains: dict[str, ChainInput] = {}
    cps = list(checkpoints)
    for where, doc in records:
        audit = _audit(doc) or {}
        if audit.get("type") in ("checkpoint", "prune"):  # a pattern that also matched the checkpoints
            cps.append((where, doc))
            continue
        chain = str(audit.get("chain_id", "?"))
        chains.setdefault(chain, ChainInput(chain, ordered=False)).records.append((where, doc))
    seen_cp: set[tuple[Any, Any, Any]] = set()
    for where, cp in cps:
        key = ((_audit(cp) or {}).get("chain_id"), (_audit(cp) or {}).get("seq"), cp.get("signature"))
        if key in seen_cp:
            continue
        seen_cp.add(key)
        chain = str((_audit(cp) or {}).get("chain_id", "?"))
        chains.setdefault(chain, ChainInput(chain, ordered=False)).checkpoints.append((where, cp))
    return list(chains.values())


def check_placement(hits: Iterable[tuple[str, str, dict[str, Any]]], daily: bool, report: Report) -> None:
    """Elasticsearch only: each record must sit under ``_id == event.id`` (or
    ``<event.id>:<chain>:<seq>``, the shipper's id for a reused request id) and, with daily indices,
    in the index of the day its own ``@timestamp`` names (``<prefix>-YYYY.MM.DD``). Swapped sources
    make a lookup by request id return another request's record."""
    for index, doc_id, doc in hits:
        audit = _audit(doc) or {}
        if audit.get("type") in ("checkpoint", "prune"):
            continue
        chain = str(audit.get("chain_id", "?"))
        seq = audit.get("seq") if isinstance(audit.get("seq"), int) else None
        event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
        event_id = str(event.get("id"))
        where = f"{index}/{doc_id}"
        if doc_id not in (event_id, f"{event_id}:{chain}:{seq}"):
            report.add(
                Problem(
                    "altered",
                    chain,
                    seq,
                    where,
                    f"stored under _id {doc_id!r} but its event.id is {event_id!r} (documents swapped "
                    "or re-indexed: a lookup by request id returns another record)",
                )
            )
        ts = doc.get("@timestamp")
        day = f"-{ts[0:4]}.{ts[5:7]}.{ts[8:10]}" if isinstance(ts, str) and len(ts) >= 10 else "?"
        if daily and not index.endswith(day):
            report.add(
                Problem(
                    "altered",
                    chain,
                    seq,
                    where,
                    f"stored in index {index!r} but its @timestamp {ts} belongs in the index of "
                    f"that day (*{day}): moved",
                )
            )


def verify(
    chains: list[ChainInput], public: Ed25519PublicKey | Keyring, report: Report | None = None
) -> Report:
    report = report or Report()
    for ci in sorted(chains, key=lambda c: c.chain_id):
        verify_chain(ci, public, report)
    return report
