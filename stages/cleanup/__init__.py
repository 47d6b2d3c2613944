from stages.cleanup.dead_code_elimination import dead_code_elimination  # noqa: F401
from stages.cleanup.const_deduplication import const_deduplication  # noqa: F401
