"""``RemovableHandle``: what registering a hook returns, so the caller can take it back.

As ``torch.utils.hooks.RemovableHandle``: the handle names its hook by an id in
the owner's ordered hook dict, holds that dict weakly (a handle kept after its
module is gone keeps nothing alive) and works as a context manager.
"""

from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["RemovableHandle"]


class RemovableHandle:
    """A handle that removes one hook from its dict; removing twice is harmless.

    >>> from collections import OrderedDict
    >>> hooks = OrderedDict()
    >>> handle = RemovableHandle(hooks)
    >>> hooks[handle.id] = print
    >>> handle.remove()
    >>> len(hooks)
    0
    >>> with RemovableHandle(hooks) as h:
    ...     hooks[h.id] = print
    >>> len(hooks)
    0
    """

    # Ids are never reused, so a stale handle can never remove a hook registered
    # after its own was removed (the same scheme as PyTorch's class-wide counter).
    _ids = itertools.count()

    def __init__(self, hooks_dict: OrderedDict[int, Any]) -> None:
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.id: int = next(RemovableHandle._ids)

    def remove(self) -> None:
        """Remove the hook if it is still registered.

        >>> from collections import OrderedDict
        >>> hooks = OrderedDict()
        >>> h = RemovableHandle(hooks)
        >>> h.remove()   # never registered: nothing happens
        """
        hooks_dict = self.hooks_dict_ref()
        if hooks_dict is not None:
            hooks_dict.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()
