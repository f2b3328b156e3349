from grpolab.cli import entry

entry()
