"""``AVG``'s one rule: the ``SUM``, then one division by the group size in the array's dtype.

Every algorithm that carries an all-reduce or reduce-scatter (``mpi``, ``ring``,
``shm``, ``hierarchical``) sums first and then calls this (the C++ ring does
the same division, ``x /= T(p)``, in ``csrc/comm/ring.cpp``). So ``AVG``
equals ``SUM / size`` bit for bit whichever algorithm ran, and two algorithms
give the same ``AVG`` wherever they give the same ``SUM``.

A division rather than a multiplication by ``1 / size``: IEEE division is
correctly rounded, so ``s / 3`` is the float nearest the true average, while
``s * fl(1/3)`` rounds twice and differs from it for some ``s``; and it equals
what a user computes from the sum with numpy.

What the rule cannot give is the same ``SUM`` from every algorithm: float
addition is not associative, and from 3 ranks up the algorithms add the
ranks' values in different orders (the ring adds chunk c's values starting
from rank c, shared memory goes in rank order, the hierarchical path sums each node first, MPICH picks its own
order by message size). With 2 ranks every order is the same one addition
(``a + b == b + a`` in IEEE arithmetic), so every algorithm agrees bit for
bit; ``tests/distributed/workers/collectives.py`` checks both statements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["divide_by_group_size"]


def divide_by_group_size(total: Any, group_size: int) -> None:
    """Turn the reduced ``SUM`` in ``total`` into the ``AVG``, in place.

    Floating arrays are divided by ``group_size`` as a number of their own
    dtype; integer arrays are floor-divided (an integer average stays integer).

    >>> x = np.array([1.0, 2.0, 10.0], np.float32)
    >>> divide_by_group_size(x, 3)
    >>> x.tolist() == (np.array([1.0, 2.0, 10.0], np.float32) / np.float32(3)).tolist()
    True
    >>> y = np.array([7, 8], np.int64); divide_by_group_size(y, 2); y.tolist()
    [3, 4]
    """
    if group_size == 1:
        return  # x / 1 == x, and integer arrays need no pass either
    if np.issubdtype(total.dtype, np.floating):
        total /= total.dtype.type(group_size)
    else:
        total //= group_size
