"""A module that cannot be imported: the deploy of its app must fail and change nothing."""

raise ImportError("this module is broken on purpose")
