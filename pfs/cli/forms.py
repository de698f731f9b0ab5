"""pachctl 1.9's way of writing a command, read as pfs's: `list repo` for list-repo, and REPO@REF:PATH in one word
for the words REPO REF PATH."""

import argparse
from collections.abc import Collection
from dataclasses import dataclass

TOP_OPTIONS_WITH_VALUES = ("--address", "--tls-ca", "--token-file")  # pfs's own options before its command


def joined_verb(argv: list[str], verbs: Collection[str]) -> list[str]:
    """ARGV with a command written as two words (`put file`) written as one (`put-file`)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        i += 2 if argv[i] in TOP_OPTIONS_WITH_VALUES else 1
    if i + 1 < len(argv) and argv[i] not in verbs and f"{argv[i]}-{argv[i + 1]}" in verbs:
        return [*argv[:i], f"{argv[i]}-{argv[i + 1]}", *argv[i + 2:]]
    return argv


@dataclass(frozen=True)
class Slots:
    """A verb's positionals in order (dests, metavars), the first NEEDED of them required; each named *repo may be
    given as REPO@REF, or REPO@REF:PATH where a path follows its ref, filling the slots after it too."""

    dests: tuple[str, ...]
    metavars: tuple[str, ...]
    needed: int
    parser: argparse.ArgumentParser

    def usage(self) -> str:
        """The verb's two forms: its words one by one, and in pachctl 1.9's one word for a repo and its ref."""
        words = [m if i < self.needed else f"[{m}]" for i, m in enumerate(self.metavars)]
        joined, i = [], 0
        while i < len(self.dests):
            if not self.dests[i].endswith("repo") or i + 1 == len(self.dests):
                joined.append(words[i])
                i += 1
                continue
            joined.append(f"{self.metavars[i]}@{self.metavars[i + 1]}")
            if self._pathed(i):
                path = f":{self.metavars[i + 2]}"
                joined[-1] += path if i + 2 < self.needed else f"[{path}]"
            i += 3 if self._pathed(i) else 2
        return f"%(prog)s [options] {' '.join(words)}\n       %(prog)s [options] {' '.join(joined)}"

    def spread(self, args: argparse.Namespace) -> None:
        """Sets ARGS' positionals from the words given, each REPO@REF[:PATH] cut in its parts; a usage error
        (exit 2) where too many or too few are given."""
        words = [w for w in (getattr(args, d) for d in self.dests) if w is not None]  # '?' fills in order
        filled: list[str] = []
        for word in words:
            at = len(filled)
            if at < len(self.dests) and self.dests[at].endswith("repo") and "@" in word:
                filled.extend(self._cut(word, at))
            else:
                filled.append(word)
        if len(filled) > len(self.dests):
            self.parser.error(f"too many arguments: {' '.join(words)} (expected {' '.join(self.metavars)})")
        if len(filled) < self.needed:
            missing = ", ".join(self.metavars[len(filled):self.needed])
            self.parser.error(f"the following arguments are required: {missing}")
        for i, dest in enumerate(self.dests):
            setattr(args, dest, filled[i] if i < len(filled) else None)

    def _pathed(self, at: int) -> bool:
        """Whether the repo slot AT is followed by its ref's and then a path's."""
        return at + 2 < len(self.dests) and self.dests[at + 2].endswith("path")

    def _cut(self, word: str, at: int) -> list[str]:
        repo, _, ref = word.partition("@")
        ref, colon, path = ref.partition(":")
        pathed = self._pathed(at)
        if not repo or not ref or (colon and not pathed):
            form = "REPO@REF:PATH" if pathed else "REPO@REF"
            self.parser.error(f"{word!r}: write it as {form}, or as the words {' '.join(self.metavars[at:at + 2])}"
                              f"{' PATH' if pathed else ''}")
        return [repo, ref, path] if colon else [repo, ref]
