import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements(name):
    with open(os.path.join(HERE, name)) as f:
        lines = (ln.split('#')[0].strip() for ln in f)
        return [ln for ln in lines if ln and not ln.startswith('-r')]


setup(
    name='ppdet-solov2',
    version='0.1.0',
    description='SOLOv2 instance segmentation on PaddlePaddle, driven by YAML configs',
    packages=find_packages(include=['ppdet', 'ppdet.*']),
    python_requires='>=3.9',
    install_requires=requirements('requirements.txt'),
    extras_require={
        'dev': ['pytest>=7.4', 'pytest-xdist>=3.5', 'hypothesis>=6.80', 'visualdl>=2.5'],
        'export': ['paddle2onnx>=2.0', 'onnxruntime>=1.18', 'ml_dtypes>=0.5,<0.6'],
    },
)
