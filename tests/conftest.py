import os
import sys

# Tests never reach the network: a stray hub id fails at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
