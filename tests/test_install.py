"""The environment: t5 installed without its clashing dependencies still works with seqio."""

import subprocess
import sys


def test_seqio_and_t5_modules_import_and_work():
    code = (
        "import seqio, t5.data.preprocessors, t5.evaluation.metrics\n"
        "import tensorflow as tf\n"
        "m = t5.evaluation.metrics.bleu(['the cat sat on the mat'], ['the cat sat on the mat'])\n"
        "print(round(m['bleu'], 3))\n"
        "ds = tf.data.Dataset.from_tensors({'targets': tf.constant('a b c d e f')})\n"
        "print(len(seqio.TaskRegistry.names()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    bleu, n_tasks = result.stdout.split()
    assert float(bleu) == 100.0
    assert int(n_tasks) == 0  # importing t5's modules registers no tasks
