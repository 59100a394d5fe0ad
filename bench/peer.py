"""What both SQL peers share: their command line and the status words in rank order
(callback word, written value), as src/status.rs has them."""
import sys

RANKS = [("enqueued", "enqueued"), ("sent", "sent"), ("failed", "error"), ("delivered", "delivered"),
         ("read", "read"), ("played", "played"), ("deleted", "deleted")]


def args():
    """DATA_DIR OUTPUT [THREADS] → (data, output, threads)."""
    return sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2
