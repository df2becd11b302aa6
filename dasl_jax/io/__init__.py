"""Files: model checkpoints, the torch-free .pth reader, peer checkpoint
converters, meshes, images and videos (media), input lists, landmark files.
"""
