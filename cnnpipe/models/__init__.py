"""One builder function per architecture, each returning a ``keras.Model``.

Importing this package registers every custom object a saved cnnpipe model can name (layers,
losses, metrics) under its registered name ("cnnpipe>AddCoords", ...), so any ``.keras`` file
written by a stage loads in safe mode once ``cnnpipe.models`` is imported, whichever of its
modules the caller needed. :data:`CUSTOM_OBJECTS` lists them for ``custom_objects=`` arguments.
"""

from __future__ import annotations

import keras

from cnnpipe.models.localizer import AddCoords, BoxFromCells
from cnnpipe.models.losses import BoxLoss, DiceCrossentropy
from cnnpipe.models.metrics import BoxIoU, DiceScore
from cnnpipe.models.transfer import GrayToRGB

CUSTOM_OBJECTS: dict[str, type] = {
    keras.saving.get_registered_name(obj): obj
    for obj in (AddCoords, BoxFromCells, GrayToRGB, BoxLoss, DiceCrossentropy, BoxIoU, DiceScore)
}
