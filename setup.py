"""codereason_jax: at which training stage does code data help an LLM reason?

Install with the tested pins (see the Makefile, which does all of this):

    pip install -c requirements/constraints.txt -e '.[test]'
    pip install -c requirements/constraints.txt --no-deps t5==0.9.4
"""

import setuptools

INSTALL_REQUIRES = [
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "seqio",
    "tensorflow",
    "tensorflow-text",
    "tensorflow-datasets",
    "gin-config",
    "sentencepiece",
    "numpy",
    "jieba",  # PanGu-α's tokenizer pre-segments Chinese text with jieba
    "matplotlib",  # plots of mixtures, loss curves and reports
    "tqdm",  # progress bars of evaluation and vocabulary training
    "etils[epath]",  # URL run directories (gs://...) and TFDS paths
    # What t5.data.preprocessors and t5.evaluation.metrics import. t5 itself is installed
    # with --no-deps because its declared dependencies clash with seqio and tensorflow-datasets.
    "babel",
    "nltk",
    "pandas",
    "rouge-score",
    "sacrebleu",
    "scikit-learn",
]

setuptools.setup(
    name="codereason_jax",
    version="0.1.0",
    description=(
        "JAX/TPU reproduction and extension of 'At Which Training Stage Does Code Data Help "
        "LLMs Reasoning?' (Ma et al., ICLR 2024)"
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["codereason_jax", "codereason_jax.*",
                                               "seqio_tasks", "seqio_tasks.*"]),
    # The paper's published tables, shown beside ours in reports.
    package_data={"codereason_jax": ["paper_results/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest"],
        # Only for preparing the real corpora on Apache Beam (python -m
        # seqio_tasks.tfds_builders.prepare --beam_runner=...); [gcp] brings the DataflowRunner.
        # Not in requirements/constraints.txt: apache-beam 2.77 needs pillow<13, protobuf<7,
        # pyarrow<26 and python-dateutil<3, below those pins, so install it in the environment
        # that prepares the data (pip install -e '.[beam]' without -c).
        "beam": ["apache-beam[gcp]>=2.50"],
        # Only for the PyTorch peer of `python -m codereason_jax.bench --suite=peer` (skipped
        # when torch is missing). Not in requirements/constraints.txt.
        "bench": ["torch>=2.4"],
        # Only for converting released weights saved in torch's legacy (pre-1.6, non-zip)
        # pickle format; zip-format pytorch_model.bin files are read without torch.
        "torch": ["torch>=2.4"],
    },
)
