"""The usage store: what is done with the usage records and their summaries (the models are in ``models``).

* ``record``: the one write, an API request's record, on the request path;
* ``summarise``: fold the records into the credentials' counters, daily totals and client addresses;
* ``read``: exact reads, the summaries plus the records not summarised yet;
* ``prune``: delete what is past the retention; ``partitions``: PostgreSQL's day partitions;
* ``sqlite_turns``: SQLite's usage writes take turns at the write lock.

Imports run one way: this package imports ``tokens.models``, which never imports it.
"""
