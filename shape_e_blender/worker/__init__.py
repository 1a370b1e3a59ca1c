"""Worker process only: never imported by Blender"""
