print("m51")
