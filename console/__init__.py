"""The Textual console: app.py (the App and its factory), screens/, widgets/, console.tcss.

cli.py adds the verbs `console` and `demo` to `headnode` through the entry-point group
headnode.commands (the scheduler's CLI never imports this package); demo.py is `headnode demo`.
"""
