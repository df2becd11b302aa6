"""The conventions as pure functions: the 62-parameter layout and whitening
(params), the camera and pixel conventions (camera), the 68/18/21-point
selections (landmarks) and the crop-box rules (crop).
"""
