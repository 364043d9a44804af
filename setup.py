from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f
                if line.strip() and not line.startswith(('#', '-r'))]


version = {}
with open('mmnorm_plugin/version.py') as f:
    exec(f.read(), version)

setup(
    name='mmnorm_plugin',
    version=version['__version__'],
    description='Small-batch normalization layers (CBN, MABN, BGN, BKN) and XBNBlock backbones '
    'for MMDetection 3.x',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmnorm_plugin', 'mmnorm_plugin.*']),
    python_requires='>=3.8',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'tests': read_requirements('requirements/tests.txt'),
                    'analysis': read_requirements('requirements/analysis.txt'),
                    'deploy': read_requirements('requirements/deploy.txt'),
                    'pretrain': read_requirements('requirements/pretrain.txt')},
    license='Apache-2.0',
    zip_safe=False,
)
