"""SeqIO task and mixture registrations (text, code, instruction and evaluation corpora).

Importing the package makes ``ast.parse`` thread-safe (see ``threadsafe_ast``): its tf.data
generators parse Python in background threads.
"""

from seqio_tasks import threadsafe_ast

threadsafe_ast.install()
