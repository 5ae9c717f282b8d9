"""poserft.common"""
