"""A local emulator of the Tencent Cloud IM REST API, for rehearsals and tests.

The pipeline never imports this package; only the CLI and the tests do.
"""

from batchedit.emulator.app import Emulator, EmulatorConfig
from batchedit.emulator.demo import seed_demo
from batchedit.emulator.faults import Faults
from batchedit.emulator.server import serve
from batchedit.emulator.store import Message, Store

__all__ = ["Emulator", "EmulatorConfig", "Faults", "Message", "Store", "seed_demo", "serve"]
