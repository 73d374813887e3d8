print("topgun")
