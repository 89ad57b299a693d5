"""Pipeline parallelism over MPI, with ``torch.distributed.pipelining``'s names.

Split a ``Sequential`` into consecutive stages on the ranks of a pipeline
group, wrap this rank's part in a ``PipelineStage``, and let a schedule stream
micro-batches through the stages; one ``optimizer.step()`` follows each
``schedule.step``. Schedules are generated as data (``actions.py``), checked
by a single-process validator (``validate.py``) and run by one interpreter
(``schedules.py``).

Example (``mpiexec -n 2 python script.py``)::

    import pyrt.distributed as dist
    from pyrt.distributed.pipelining import PipelineStage, Schedule1F1B, split_sequential

    dist.init_process_group()
    stage = PipelineStage(split_sequential(model, 2), dist.get_rank(), 2)
    schedule = Schedule1F1B(stage, n_microbatches=4, loss_fn=nn.CrossEntropyLoss())
    optimizer.zero_grad()
    if stage.is_first:
        schedule.step(x)
    else:
        losses = []
        schedule.step(target=y, losses=losses)
    optimizer.step()
"""

from pyrt.distributed.pipelining.actions import Action
from pyrt.distributed.pipelining.schedules import (
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleZeroBubble,
)
from pyrt.distributed.pipelining.split import partition_sequential, split_sequential
from pyrt.distributed.pipelining.stage import PipelineStage
from pyrt.distributed.pipelining.timeline import (
    TimelineEvent,
    bubble_fraction,
    gather_timelines,
    plot_schedule,
)
from pyrt.distributed.pipelining.validate import ScheduleError, ScheduleStats, validate_schedule

__all__ = [
    "Action", "PipelineStage", "Schedule1F1B", "ScheduleError", "ScheduleGPipe",
    "ScheduleInterleaved1F1B", "ScheduleStats", "ScheduleZeroBubble", "TimelineEvent",
    "bubble_fraction", "gather_timelines", "partition_sequential", "plot_schedule",
    "split_sequential", "validate_schedule",
]
