"""``grpolab chat`` as a library: ``session`` (history, /commands, context trimming, task verdicts) and
``repl`` (the read-reply loop over any streaming backend)."""
