from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="dagan",
    version="0.1.0",
    description="Depth-aware talking-head animation (DaGAN / DaGAN++): face depth, RGB-D keypoints, "
    "cross-modal attention generator",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: MIT License", "Programming Language :: Python :: 3"],
    python_requires=">=3.9",
    packages=find_packages(include=["dagan", "dagan.*"]),
    package_data={"dagan": ["py.typed"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "face-alignment>=1.4",
        "kornia>=0.7",
        "scikit-image>=0.21",
        "imageio>=2.31",
        "imageio-ffmpeg>=0.4.9",
        "tensorboard>=2.14",
        "pyyaml>=6.0",
        "numpy>=1.23",
        "scipy>=1.10",
        "tqdm>=4.65",
        # the offline face tools (dlib's detector, 68 landmarks, identity embedding; CC0 models inside the
        # wheels): the default motion, the landmark stage, needs them
        "dlib-bin>=19.24",
        "face_recognition_models>=0.3",
    ],
    extras_require={
        "faces": [],  # kept so that `pip install -e ".[faces]"` still works: the face tools are in the core install
        "test": ["pytest>=7.4", "hypothesis>=6.80", "onnx>=1.15",
                 "onnxruntime>=1.17", "gradio>=6.31", "selenium>=4.10"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "safetensors": ["safetensors>=0.4"],
        "app": ["gradio>=6.31"],
    },
    entry_points={
        "console_scripts": [
            "dagan-convert=dagan.convert:cli",
        ]
    },
)
