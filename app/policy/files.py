"""``policy/`` files ↔ database: import (one revision), export, diff."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from flask import current_app
from sqlalchemy.orm import Session

from app.authz import delegation
from app.authz.engine import RuleChange
from app.authz.packs import P_FIELDS, PackSet, Rule, format_rule, is_pack_rule, load_packs, parse_rule_line, rule_pack
from app.authz.policytest import load_suite, run_suite, suite_files
from app.errors import ValidationError
from app.policy import store as policy_store


@lru_cache(maxsize=8)
def _file_packs(policy_dir: str, model_path: str, stamp: float) -> PackSet:
    return load_packs(policy_dir, model_path)


def file_packs(app: Any = None) -> PackSet:
    """The packs in ``policy/`` (cached until a file changes)."""
    cfg = (app or current_app).config
    pdir = Path(cfg["POLICY_DIR"])
    stamp = max((p.stat().st_mtime for p in pdir.glob("*.*")), default=0.0)
    return _file_packs(str(pdir), cfg["MODEL_PATH"], stamp)


@dataclass
class PackDiff:
    """What differs between the files and the database for one pack."""

    pack: str
    only_in_files: list[Rule] = field(default_factory=list)
    only_in_db: list[Rule] = field(default_factory=list)
    document_differs: bool = False

    @property
    def empty(self) -> bool:
        """True when files and database agree."""
        return not (self.only_in_files or self.only_in_db or self.document_differs)


def diff(session: Session, files: PackSet) -> list[PackDiff]:
    """Per pack, the rules and documents that differ between files and database."""
    documents = policy_store.load_documents(session)
    db_rules = [r for r in policy_store.load_rules(session) if is_pack_rule(r)]
    out = []
    for pid in sorted(set(files.packs) | set(documents)):
        pack = files.packs.get(pid)
        file_rules = list(pack.rules) if pack else []
        mine = [r for r in db_rules if _pack_of(r) == pid]
        d = PackDiff(pid)
        d.only_in_files = [r for r in file_rules if r not in set(mine)]
        d.only_in_db = [r for r in mine if r not in set(file_rules)]
        d.document_differs = (dict(pack.document) if pack else None) != documents.get(pid)
        out.append(d)
    return out


def _pack_of(rule: Rule) -> str:
    return rule_pack(rule)


def check_files(files: PackSet, policy_dir: Path | str | None = None) -> list[str]:
    """What an import refuses: the escalation verifier's counterexamples and failing policy tests."""
    problems = delegation.problems(files)
    if policy_dir is not None:
        for path in suite_files(Path(policy_dir)):
            suite = load_suite(path)
            if any(f[0] == "g4" and f[2][5:] not in files.packs for f in suite.facts):
                continue
            for res in run_suite(files, suite):
                if not res.passed:
                    problems.append(
                        f"policy test fails: {res.case.id}: expected {res.case.expect} {res.case.reason}".rstrip()
                        + f", got {res.got} ({res.got_reason})"
                    )
    return problems


def import_files(
    session: Session,
    files: PackSet,
    actor_id: int | None = None,
    message: str = "import policy/",
    policy_dir: Path | str | None = None,
) -> int:
    """Make the database equal to the files, as one revision; returns it (0 if nothing changed).

    Raises ValidationError (nothing written) when the files fail :func:`check_files`.
    """
    diffs = diff(session, files)
    if all(d.empty for d in diffs):
        return 0
    problems = check_files(files, policy_dir)
    if problems:
        raise ValidationError("policy/ fails verification; nothing imported", problems=problems)
    handle = policy_store.begin_write(session, "import", actor_id, message)
    changes: list[RuleChange] = []
    for d in diffs:
        changes.extend(RuleChange("remove", r) for r in d.only_in_db)
        changes.extend(RuleChange("add", r) for r in d.only_in_files)
        if d.document_differs and d.pack in files.packs:
            policy_store.save_document(session, d.pack, files.packs[d.pack].document, handle.number)
    policy_store.add_changes(session, handle, changes)
    return handle.number


def export_files(session: Session, policy_dir: Path) -> list[str]:
    """Write the database's packs to ``policy/`` (only files whose content changes); returns paths."""
    documents = policy_store.load_documents(session)
    db_rules = [r for r in policy_store.load_rules(session) if is_pack_rule(r)]
    written = []
    for pid, document in sorted(documents.items()):
        ypath = policy_dir / f"{pid}.yaml"
        cpath = policy_dir / f"{pid}.csv"
        current: Any = yaml.safe_load(ypath.read_text(encoding="utf-8")) if ypath.exists() else None
        if current != document:
            ypath.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
            written.append(str(ypath))
        rules = [r for r in db_rules if _pack_of(r) == pid]

        old = []
        if cpath.exists():
            old = [r for r in (parse_rule_line(x) for x in cpath.read_text(encoding="utf-8").splitlines()) if r]
        if old != rules:
            header = f"# {pid} pack: Casbin rules, exported from the database. p = {', '.join(P_FIELDS)}\n"
            cpath.write_text(header + "\n".join(format_rule(r) for r in rules) + "\n", encoding="utf-8")
            written.append(str(cpath))
    return written
