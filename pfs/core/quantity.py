"""Kubernetes quantities ('0.5', '500m', '2Gi', '1e3'), as a manifest's resources give them: parsed to compare a
request with its limit, so that a pipeline Kubernetes would refuse at each of its jobs is refused when it is made.

Pure code: the grammar of Kubernetes' resource.Quantity, without the Kubernetes client.
"""

import re
from decimal import Decimal

_QUANTITY = re.compile(r"\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse(text: str) -> Decimal | None:
    """The value of quantity TEXT, or None if TEXT is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * 2 ** _BINARY[suffix]
    exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
    return number.scaleb(exponent)
