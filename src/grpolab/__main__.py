from grpolab.cli import entry

# The guard matters: vLLM starts its workers with spawn, which imports this module again.
if __name__ == "__main__":
    entry()
