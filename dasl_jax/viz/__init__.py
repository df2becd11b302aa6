"""Pictures: the z-buffer rasteriser (render) and overlays, depth and normal maps
(visualize).
"""
